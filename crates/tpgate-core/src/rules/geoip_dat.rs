//! v2ray's `geoip.dat` (mihomo's `geodata-mode: true`): a protobuf list of categories,
//! each a country code (`CN`) or a named set (`PRIVATE`, `TELEGRAM`, `NETFLIX`) with its
//! CIDRs. Only the categories rules name are kept. The schema is v2fly's
//! `app/router/routercommon/common.proto` (`GeoIPList`, `GeoIP`, `CIDR`).

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, PartialEq, prost::Message)]
pub struct GeoIpList {
    #[prost(message, repeated, tag = "1")]
    pub entry: Vec<GeoIpEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GeoIpEntry {
    #[prost(string, tag = "1")]
    pub country_code: String,
    #[prost(message, repeated, tag = "2")]
    pub cidr: Vec<Cidr>,
    /// Matches everything but the CIDRs (rare; read as written).
    #[prost(bool, tag = "3")]
    pub reverse_match: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Cidr {
    /// 4 or 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub ip: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub prefix: u32,
}

/// One category: its networks (normalised) and whether it matches their complement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoIpCategory {
    pub nets: Vec<IpNet>,
    pub reverse: bool,
}

impl GeoIpCategory {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip)) != self.reverse
    }
}

/// The categories of `data` named in `names` (compared without case; returned upper-case,
/// as rules hold them). A name the file lacks, or an entry that is not a network, is an
/// error.
pub fn geoip_dat_categories(
    data: &[u8],
    names: &[String],
) -> Result<Vec<(String, GeoIpCategory)>, String> {
    let list = <GeoIpList as prost::Message>::decode(data)
        .map_err(|e| format!("not a v2ray geoip.dat: {e}"))?;
    let mut out = Vec::new();
    for want in names {
        let want = want.to_ascii_uppercase();
        let Some(e) = list
            .entry
            .iter()
            .find(|e| e.country_code.eq_ignore_ascii_case(&want))
        else {
            return Err(format!("the geoip.dat has no category `{want}`"));
        };
        let mut nets = Vec::with_capacity(e.cidr.len());
        for c in &e.cidr {
            let ip = match c.ip.len() {
                4 => IpAddr::V4(Ipv4Addr::new(c.ip[0], c.ip[1], c.ip[2], c.ip[3])),
                16 => {
                    let b: [u8; 16] = c.ip.as_slice().try_into().map_err(|_| "cidr")?;
                    IpAddr::V6(Ipv6Addr::from(b))
                }
                n => return Err(format!("category `{want}`: an address of {n} bytes")),
            };
            let prefix = u8::try_from(c.prefix)
                .map_err(|_| format!("category `{want}`: prefix {}", c.prefix))?;
            let net = IpNet::new(ip, prefix)
                .map_err(|_| format!("category `{want}`: {ip}/{prefix} is not a network"))?;
            nets.push(net.trunc());
        }
        out.push((
            want,
            GeoIpCategory {
                nets: IpNet::aggregate(&nets),
                reverse: e.reverse_match,
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn dat() -> Vec<u8> {
        let cidr = |ip: &[u8], prefix| Cidr {
            ip: ip.to_vec(),
            prefix,
        };
        GeoIpList {
            entry: vec![
                GeoIpEntry {
                    country_code: "TELEGRAM".into(),
                    cidr: vec![
                        cidr(&[203, 0, 113, 0], 25),
                        cidr(
                            &[0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                            64,
                        ),
                    ],
                    reverse_match: false,
                },
                GeoIpEntry {
                    country_code: "JP".into(),
                    cidr: vec![cidr(&[198, 51, 100, 7], 24)],
                    reverse_match: false,
                },
            ],
        }
        .encode_to_vec()
    }

    #[test]
    fn named_categories_are_read_and_match_their_networks() {
        let cats = geoip_dat_categories(&dat(), &["telegram".into(), "jp".into()]).unwrap();
        let (name, tg) = &cats[0];
        assert_eq!(name, "TELEGRAM");
        assert!(tg.contains("203.0.113.9".parse().unwrap()));
        assert!(!tg.contains("203.0.113.200".parse().unwrap()));
        assert!(tg.contains("2001:db8:2::1".parse().unwrap()));
        let (_, jp) = &cats[1];
        assert_eq!(
            jp.nets,
            vec!["198.51.100.0/24".parse::<IpNet>().unwrap()],
            "host bits cleared"
        );
        assert!(geoip_dat_categories(&dat(), &["netflix".into()])
            .unwrap_err()
            .contains("NETFLIX"));
        assert!(geoip_dat_categories(b"\xff\xff\xff", &[]).is_err());
    }
}
