//! UDP flow churn: many flows of one datagram each, every one from a new source port, and the
//! sink that counts them. Plain blocking std sockets: one thread sends far more than the
//! rates the bench offers, and the sink only counts.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

/// What `udp-churn` sends.
pub(crate) struct Churn {
    pub(crate) to: SocketAddr,
    pub(crate) from: IpAddr,
    pub(crate) flows: u32,
    pub(crate) rate: u32,
    pub(crate) first_port: u16,
    pub(crate) size: usize,
}

pub(crate) fn send(c: &Churn) -> io::Result<()> {
    if c.rate == 0 || c.size < 8 {
        return Err(io::Error::other("--rate must be > 0 and --size at least 8"));
    }
    let last = u32::from(c.first_port) + c.flows;
    if last > 65536 {
        return Err(io::Error::other(format!(
            "{} flows from port {} run past port 65535",
            c.flows, c.first_port
        )));
    }
    let mut payload = vec![0u8; c.size];
    let (mut sent, mut skipped) = (0u32, 0u32);
    let start = Instant::now();
    for i in 0..c.flows {
        // Paced against the start, so a late datagram does not push back the rest.
        let due = start + Duration::from_secs_f64(f64::from(i) / f64::from(c.rate));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let port = u16::try_from(u32::from(c.first_port) + i).map_err(io::Error::other)?;
        // A port some other program holds just skips one flow.
        let Ok(socket) = UdpSocket::bind(SocketAddr::new(c.from, port)) else {
            skipped += 1;
            continue;
        };
        payload[..4].copy_from_slice(&i.to_be_bytes());
        match socket.send_to(&payload, c.to) {
            Ok(_) => sent += 1,
            Err(_) => skipped += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent={sent} skipped={skipped} secs={secs:.3} rate={:.0}",
        f64::from(sent) / secs
    );
    Ok(())
}

pub(crate) fn sink(bind: SocketAddr, idle_ms: u64, wait_s: u64) -> io::Result<()> {
    let socket = UdpSocket::bind(bind)?;
    eprintln!("udp sink listening on {bind}");
    let mut sources = HashSet::new();
    let mut packets = 0u64;
    let mut buf = [0u8; 2048];
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    socket.set_read_timeout(Some(Duration::from_secs(wait_s.max(1))))?;
    loop {
        match socket.recv_from(&mut buf) {
            Ok((_, from)) => {
                packets += 1;
                sources.insert(from);
                last = Instant::now();
                if first.is_none() {
                    first = Some(last);
                    socket.set_read_timeout(Some(Duration::from_millis(idle_ms.max(1))))?;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let span = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    println!("packets={packets} sources={} span={span:.3}", sources.len());
    Ok(())
}
