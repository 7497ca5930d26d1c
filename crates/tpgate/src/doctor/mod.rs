//! `tpgate doctor`: collect a snapshot of the live machine ([`collect`], [`sockdiag`]),
//! diagnose it with `tpgate_core::doctor`, print the findings ([`report`]); or follow one
//! flow with nftables tracing ([`trace`]). Read-only except for trace's own owned table.

mod collect;
mod report;
mod sockdiag;
mod trace;

use std::io::IsTerminal as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use tpgate_core::config::Config;
use tpgate_core::doctor::{diagnose, has_problems, Expect};
use tpgate_core::net::Network;

#[derive(clap::Args)]
pub(crate) struct DoctorArgs {
    /// tpgate's config, to compare the live setup against (port, marks, table, LAN).
    #[arg(short, long)]
    pub(crate) config: Option<PathBuf>,
    /// Machine-readable findings.
    #[arg(long)]
    json: bool,
    /// Follow one flow with nftables tracing: `--trace tcp 203.0.113.2:443`.
    #[arg(long, num_args = 2, value_names = ["tcp|udp", "DST:PORT"])]
    trace: Option<Vec<String>>,
    /// With --trace: wait for a real packet from this LAN host instead of sending one.
    #[arg(long, requires = "trace")]
    from: Option<IpAddr>,
    /// With --from: seconds to wait for that packet.
    #[arg(long, default_value_t = 10, requires = "from")]
    wait: u64,
}

/// Runs doctor; 0 healthy, 1 problems found, 2 usage error.
pub(crate) fn run(args: &DoctorArgs, config: Option<&Config>) -> Result<ExitCode> {
    if let Some(t) = &args.trace {
        return run_trace(args, t);
    }
    let mut snap = collect::snapshot();
    snap.expect = config.map(Expect::from);
    let findings = diagnose(&snap);
    if args.json {
        print!("{}", report::json(&findings));
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", report::human(&findings, color, !snap.root));
    }
    Ok(if has_problems(&findings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn run_trace(args: &DoctorArgs, t: &[String]) -> Result<ExitCode> {
    let proto = match t.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("tcp") => Network::Tcp,
        Some("udp") => Network::Udp,
        other => {
            eprintln!("tpgate doctor --trace: protocol must be tcp or udp, not {other:?}");
            return Ok(ExitCode::from(2));
        }
    };
    let Some(Ok(dst)) = t.get(1).map(|d| d.parse::<SocketAddr>()) else {
        eprintln!("tpgate doctor --trace: destination must be ADDR:PORT ([v6]:PORT), e.g. 203.0.113.2:443");
        return Ok(ExitCode::from(2));
    };
    let flow = trace::Flow {
        proto,
        dst,
        from: args.from,
        wait: Duration::from_secs(args.wait),
    };
    let (text, seen) = trace::run(&flow)?;
    print!("{text}");
    Ok(if seen {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
