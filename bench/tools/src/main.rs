//! Load helpers for `bench/run.sh` that Debian has no package for: a UDP flow-churn client
//! (one datagram per source port) with a sink that counts what arrives, and a client that
//! opens and holds thousands of idle TCP connections with a server that accepts and holds
//! them. Lab tools only: they talk to the addresses they are given and nothing else, and
//! they print one machine-readable `key=value` result line on stdout.
#![forbid(unsafe_code)]

mod churn;
mod hold;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tpgate-bench-tool",
    about = "Load helpers for tpgate's bench/run.sh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sends `flows` one-datagram UDP flows to `to`, each from its own source port
    /// (first-port, first-port + 1, ...), paced at `rate` flows per second.
    UdpChurn {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        from: IpAddr,
        #[arg(long)]
        flows: u32,
        #[arg(long)]
        rate: u32,
        #[arg(long, default_value_t = 20000)]
        first_port: u16,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Counts datagrams and distinct sources arriving on `bind`; exits `idle-ms` after the
    /// last one (or after `wait-s` if none comes) and prints the counts.
    UdpSink {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        idle_ms: u64,
        #[arg(long, default_value_t = 30)]
        wait_s: u64,
    },
    /// Opens `count` TCP connections to `to` (at most `concurrency` connecting at once),
    /// prints how many are held, keeps them idle until SIGTERM/SIGINT, then closes them all.
    TcpHold {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
    },
    /// Accepts TCP connections on `bind` and holds each until the peer closes it; prints
    /// `open=N accepted=M` whenever that changes (at most every 200 ms).
    TcpSink {
        #[arg(long)]
        bind: SocketAddr,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::UdpChurn {
            to,
            from,
            flows,
            rate,
            first_port,
            size,
        } => churn::send(&churn::Churn {
            to,
            from,
            flows,
            rate,
            first_port,
            size,
        }),
        Command::UdpSink {
            bind,
            idle_ms,
            wait_s,
        } => churn::sink(bind, idle_ms, wait_s),
        Command::TcpHold {
            to,
            count,
            concurrency,
        } => hold::hold(to, count, concurrency),
        Command::TcpSink { bind } => hold::sink(bind),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
