//! Resolving upstream server names with the routing mark on the resolver's own sockets, so
//! the lookup of a proxy's address never goes through that proxy (or through tpgate at all).
//! Nameservers come from /etc/resolv.conf; messages are built with hickory-proto.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use socket2::Type;
use tokio::net::UdpSocket;

use super::error::ResolveError;

const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub(crate) struct Resolver {
    servers: Vec<SocketAddr>,
    mark: u32,
    ipv6: bool,
}

impl Resolver {
    pub(crate) fn from_system(mark: u32, ipv6: bool) -> Self {
        let mut servers = system_nameservers();
        if servers.is_empty() {
            servers.push(SocketAddr::from((Ipv4Addr::LOCALHOST, 53)));
        }
        Self {
            servers,
            mark,
            ipv6,
        }
    }

    /// The first address of `host`: an A record, else AAAA (when IPv6 is on).
    pub(crate) async fn lookup(&self, host: &str) -> io::Result<IpAddr> {
        if let Ok(ip) = host.parse() {
            return Ok(ip);
        }
        let name = Name::from_ascii(host).map_err(|source| ResolveError::BadName {
            host: host.to_owned(),
            source,
        })?;
        let mut kinds = vec![RecordType::A];
        if self.ipv6 {
            kinds.push(RecordType::AAAA);
        }
        let mut last: io::Error = ResolveError::NoAddress {
            host: host.to_owned(),
        }
        .into();
        for kind in kinds {
            for server in &self.servers {
                match self.query(*server, &name, kind).await {
                    Ok(Some(ip)) => return Ok(ip),
                    Ok(None) => break,
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    async fn query(
        &self,
        server: SocketAddr,
        name: &Name,
        kind: RecordType,
    ) -> io::Result<Option<IpAddr>> {
        let s = tpgate_sys::outbound_socket(server.is_ipv6(), Type::DGRAM, self.mark)?;
        s.connect(&server.into())?;
        let sock = UdpSocket::from_std(s.into())?;
        let id: u16 = rand::random();
        let mut msg = Message::new();
        msg.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(name.clone(), kind));
        let bytes = msg.to_vec().map_err(ResolveError::Encode)?;
        sock.send(&bytes).await?;
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
                .await
                .map_err(|_| ResolveError::Timeout { server })??;
            let Ok(reply) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if reply.id() != id {
                continue;
            }
            let ip = reply.answers().iter().find_map(|r| match r.data() {
                RData::A(a) if kind == RecordType::A => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) if kind == RecordType::AAAA => Some(IpAddr::V6(a.0)),
                _ => None,
            });
            return Ok(ip);
        }
    }
}

/// The nameservers of /etc/resolv.conf (port 53, zone suffixes dropped); empty when the
/// file is missing.
pub(crate) fn system_nameservers() -> Vec<SocketAddr> {
    parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let got = parse_resolv_conf("# x\nsearch lan\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver fe80::1%eth0\noptions edns0\n");
        assert_eq!(
            got,
            [
                "192.0.2.53:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[tokio::test]
    async fn literals_need_no_lookup() {
        let r = Resolver {
            servers: vec![],
            mark: 0,
            ipv6: true,
        };
        assert_eq!(
            r.lookup("203.0.113.9").await.unwrap(),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }
}
