//! The GeoIP data of `GEOIP` / `SRC-GEOIP` rules: a MaxMind-format country database
//! (GeoLite2-Country, or mihomo's `Country.mmdb`) read into memory once, or with
//! `geodata-mode` a v2ray `geoip.dat` of which only the categories rules name are kept
//! (country codes and sets such as `telegram`); and the lists of `GEOSITE` rules, read from
//! a v2ray `geosite.dat` when the config is loaded.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context as _, Result};
use maxminddb::{PathElement, Reader};
use tpgate_core::config::Config;

pub(crate) struct GeoIp {
    /// The country database or geoip.dat (`None`: only `IP-ASN` rules need a lookup).
    source: Option<Source>,
    /// The ASN database of `IP-ASN` rules.
    asn: Option<Reader<Vec<u8>>>,
}

enum Source {
    Mmdb(Reader<Vec<u8>>),
    /// `geodata-mode`: the named categories of a geoip.dat.
    Dat(Vec<(String, tpgate_core::rules::GeoIpCategory)>),
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GeoIp")
    }
}

impl GeoIp {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let reader = Reader::open_readfile(path)
            .with_context(|| format!("{}: cannot read the GeoIP database", path.display()))?;
        Ok(Self {
            source: Some(Source::Mmdb(reader)),
            asn: None,
        })
    }

    /// What `config`'s rules read, as the load resolved it (`geoip-path`, `asn-path`); a
    /// file that is still missing (a `geox-url` download will bring it) is left out.
    /// `None` when nothing is needed or there.
    pub(crate) fn load(config: &Config) -> Result<Option<Self>> {
        let present = |p: &Option<String>| p.clone().filter(|p| Path::new(p).exists());
        let source = match present(&config.geoip_path) {
            Some(path) if uses_geoip(config) => Self::open_for(config, Path::new(&path))?.source,
            _ => None,
        };
        let asn = match present(&config.asn_path) {
            Some(path) if uses_asn(config) => Some(
                Reader::open_readfile(&path)
                    .with_context(|| format!("{path}: cannot read the ASN database"))?,
            ),
            _ => None,
        };
        Ok((source.is_some() || asn.is_some()).then_some(Self { source, asn }))
    }

    /// `geodata-mode`: the categories `names` of the geoip.dat at `path`.
    pub(crate) fn open_dat(path: &Path, names: &[String]) -> Result<Self> {
        let data = std::fs::read(path)
            .with_context(|| format!("{}: cannot read the geoip.dat", path.display()))?;
        let cats = tpgate_core::rules::geoip_dat_categories(&data, names)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            source: Some(Source::Dat(cats)),
            asn: None,
        })
    }

    /// What `config` reads: the geoip.dat with `geodata-mode`, else the country database.
    pub(crate) fn open_for(config: &Config, path: &Path) -> Result<Self> {
        if config.geox.geodata_mode {
            Self::open_dat(path, &geoip_codes(config))
        } else {
            Self::open(path)
        }
    }

    /// Upper-case codes of `ip`: its country (country database), or every named category
    /// holding it (geoip.dat).
    pub(crate) fn codes(&self, ip: IpAddr) -> Vec<String> {
        let mut out: Vec<String> = match &self.source {
            Some(Source::Mmdb(_)) => self.country(ip).into_iter().collect(),
            Some(Source::Dat(cats)) => cats
                .iter()
                .filter(|(_, c)| c.contains(ip.to_canonical()))
                .map(|(n, _)| n.clone())
                .collect(),
            None => Vec::new(),
        };
        if let Some(n) = self.asn_of(ip) {
            out.push(format!("AS{n}"));
        }
        out
    }

    /// The autonomous system number of `ip` in the ASN database.
    fn asn_of(&self, ip: IpAddr) -> Option<u32> {
        let found = self.asn.as_ref()?.lookup(ip.to_canonical()).ok()?;
        found
            .decode_path(&[PathElement::Key("autonomous_system_number")])
            .ok()?
    }

    /// Every network of autonomous system `n` in the ASN database.
    fn asn_ranges(&self, n: u32) -> Vec<ipnet::IpNet> {
        let Some(reader) = &self.asn else {
            return Vec::new();
        };
        let key = [PathElement::Key("autonomous_system_number")];
        let mut out = Vec::new();
        for all in ["0.0.0.0/0", "::/0"] {
            let Ok(cidr) = all.parse() else { continue };
            let Ok(iter) = reader.within(cidr, Default::default()) else {
                continue;
            };
            for item in iter.flatten() {
                let asn: Option<u32> = item.decode_path(&key).ok().flatten();
                if asn != Some(n) {
                    continue;
                }
                if let Some(net) = item
                    .network()
                    .ok()
                    .and_then(|n| n.to_string().parse::<ipnet::IpNet>().ok())
                {
                    if !embeds_v4(net, all) {
                        out.push(net);
                    }
                }
            }
        }
        out
    }

    /// Every network of country `cc` (upper case ISO code) in the database, for the
    /// kernel offload of `GEOIP,CC,DIRECT`. IPv4 networks come from the IPv4 subtree (in an
    /// IPv6 database too); IPv6 networks exclude the IPv4-mapped and -compatible ranges.
    pub(crate) fn ranges(&self, cc: &str) -> Vec<ipnet::IpNet> {
        if let Some(n) = cc.strip_prefix("AS").and_then(|n| n.parse().ok()) {
            return self.asn_ranges(n);
        }
        let reader = match &self.source {
            None => return Vec::new(),
            Some(Source::Mmdb(r)) => r,
            Some(Source::Dat(cats)) => {
                return cats
                    .iter()
                    .find(|(n, c)| n.eq_ignore_ascii_case(cc) && !c.reverse)
                    .map(|(_, c)| c.nets.clone())
                    .unwrap_or_default()
            }
        };
        let path = [PathElement::Key("country"), PathElement::Key("iso_code")];
        let mut out = Vec::new();
        for all in ["0.0.0.0/0", "::/0"] {
            let Ok(cidr) = all.parse() else { continue };
            let Ok(iter) = reader.within(cidr, Default::default()) else {
                continue;
            };
            for item in iter.flatten() {
                let code: Option<String> = item.decode_path(&path).ok().flatten();
                if !code.is_some_and(|c| c.eq_ignore_ascii_case(cc)) {
                    continue;
                }
                let Some(net) = item
                    .network()
                    .ok()
                    .and_then(|n| n.to_string().parse::<ipnet::IpNet>().ok())
                else {
                    continue;
                };
                if !embeds_v4(net, all) {
                    out.push(net);
                }
            }
        }
        out
    }

    /// The ISO country code of `ip`, upper case; `None` when the database has none.
    fn country(&self, ip: IpAddr) -> Option<String> {
        let Some(Source::Mmdb(reader)) = &self.source else {
            return None;
        };
        let found = reader.lookup(ip.to_canonical()).ok()?;
        let path = [PathElement::Key("country"), PathElement::Key("iso_code")];
        let code: Option<String> = found.decode_path(&path).ok()?;
        code.or_else(|| {
            let path = [
                PathElement::Key("registered_country"),
                PathElement::Key("iso_code"),
            ];
            found.decode_path(&path).ok()?
        })
        .map(|c| c.to_ascii_uppercase())
    }
}

/// When a rule needs the database: resolves `geoip-path` (relative to the config file's
/// directory; default `Country.mmdb` there) and checks it opens, so `tpgate check` and a
/// start fail early with the path. The resolved path is kept in the config. A config that
/// names no `geoip-path` (mihomo configs count on mihomo downloading the file) gets a
/// warning instead, and its GEOIP rules never match; returned as `Ok(Some(warning))`.
pub(crate) fn check(config: &mut Config, config_path: Option<&Path>) -> Result<Option<String>> {
    let country = check_country(config, config_path)?;
    let asn = check_asn(config, config_path)?;
    Ok(match (country, asn) {
        (Some(a), Some(b)) => Some(format!("{a}\nwarning: {b}")),
        (a, b) => a.or(b),
    })
}

fn check_country(config: &mut Config, config_path: Option<&Path>) -> Result<Option<String>> {
    if !uses_geoip(config) {
        return Ok(None);
    }
    let base = crate::providers::config_dir(config_path);
    let explicit = config.geoip_path.is_some();
    let dat = config.geox.geodata_mode;
    let (default, url, key) = if dat {
        ("GeoIP.dat", config.geox.geoip.clone(), "geox-url.geoip")
    } else {
        ("Country.mmdb", config.geox.mmdb.clone(), "geox-url.mmdb")
    };
    let path = base.join(config.geoip_path.as_deref().unwrap_or(default));
    // A country database knows countries only: mihomo's GeoIP.dat categories never match.
    let categories: Vec<String> = geoip_codes(config)
        .into_iter()
        .filter(|c| c.len() != 2)
        .collect();
    let note = (!dat && !categories.is_empty()).then(|| {
        format!(
            "GEOIP {} are GeoIP.dat categories, which a country database does not have: those \
             rules never match (set `geodata-mode: true` with a geoip.dat to use them)",
            categories.join(", ")
        )
    });
    let opened = if !path.exists() && !explicit && url.is_none() {
        Err(anyhow::anyhow!("{}: no such file", path.display()))
    } else {
        GeoIp::open_for(config, &path)
    };
    match opened {
        Ok(_) => {
            config.geoip_path = Some(path.display().to_string());
            Ok(note)
        }
        Err(e) if (explicit || path.exists()) && url.is_none() => Err(e.context(if dat {
            "GEOIP rules need the geoip.dat (geodata-mode)"
        } else {
            "GEOIP rules need a country database"
        })),
        Err(e) if path.exists() => Err(e.context("GEOIP rules cannot use this file")),
        Err(e) => {
            let then = match &url {
                // Kept: the download goes there, and the reload after it reads it.
                Some(url) => {
                    config.geoip_path = Some(path.display().to_string());
                    format!("GEOIP rules will not match until `tpgate run` has downloaded it from {url} ({key})")
                }
                None => {
                    config.geoip_path = None;
                    format!(
                        "GEOIP rules will not match (put a {} there, set `geoip-path`, or set \
                         `{key}` to have tpgate download it)",
                        if dat {
                            "v2ray geoip.dat"
                        } else {
                            "GeoLite2-Country database"
                        }
                    )
                }
            };
            let mut w = format!("{e:#}; {then}");
            if let Some(n) = note {
                w = format!("{w}; {n}");
            }
            Ok(Some(w))
        }
    }
}

/// The `GEOIP` / `SRC-GEOIP` codes `config`'s rules name (`LAN` aside), once each.
pub(crate) fn geoip_codes(config: &Config) -> Vec<String> {
    let mut codes: Vec<String> = config
        .rules
        .iter()
        .chain(config.sub_rules.iter().flat_map(|(_, l)| l))
        .flat_map(|r| r.matcher.geoip_codes())
        .map(str::to_owned)
        .collect();
    codes.sort();
    codes.dedup();
    codes
}

/// Whether a network seen in the `all` pass of a `within` walk is the IPv4 subtree seen
/// again from the IPv6 pass (as IPv4, or embedded in IPv6).
fn embeds_v4(net: ipnet::IpNet, all: &str) -> bool {
    match net {
        ipnet::IpNet::V6(n) => {
            let seg = n.network().segments();
            seg[..5] == [0; 5] && (seg[5] == 0 || seg[5] == 0xffff)
        }
        ipnet::IpNet::V4(_) => all == "::/0",
    }
}

/// Whether `config`'s rules use `IP-ASN` / `SRC-IP-ASN`.
pub(crate) fn uses_asn(config: &Config) -> bool {
    config
        .rules
        .iter()
        .chain(config.sub_rules.iter().flat_map(|(_, l)| l))
        .any(|r| r.matcher.needs_asn())
}

/// `IP-ASN` rules: resolves `asn-path` (default `ASN.mmdb` next to the config) like the
/// country database; a missing default (or one `geox-url.asn` will bring) is a warning.
fn check_asn(config: &mut Config, config_path: Option<&Path>) -> Result<Option<String>> {
    if !uses_asn(config) {
        return Ok(None);
    }
    let base = crate::providers::config_dir(config_path);
    let explicit = config.asn_path.is_some();
    let path = base.join(config.asn_path.as_deref().unwrap_or("ASN.mmdb"));
    if path.exists() {
        Reader::open_readfile(&path).with_context(|| {
            format!(
                "{}: IP-ASN rules cannot read this ASN database",
                path.display()
            )
        })?;
        config.asn_path = Some(path.display().to_string());
        return Ok(None);
    }
    match &config.geox.asn {
        Some(url) => {
            config.asn_path = Some(path.display().to_string());
            Ok(Some(format!(
                "{}: no ASN database yet; IP-ASN rules will not match until `tpgate run` has \
                 downloaded it from {url} (geox-url.asn)",
                path.display()
            )))
        }
        None if explicit => anyhow::bail!(
            "{}: IP-ASN rules need an ASN database (set `asn-path` or `geox-url.asn`)",
            path.display()
        ),
        None => {
            config.asn_path = None;
            Ok(Some(format!(
                "{}: no ASN database; IP-ASN rules will not match (put a GeoLite2-ASN database \
                 there, set `asn-path`, or set `geox-url.asn` to have tpgate download it)",
                path.display()
            )))
        }
    }
}

/// Whether `config`'s rules or DNS settings use `GEOSITE` lists.
pub(crate) fn uses_geosite(config: &Config) -> bool {
    let mut c = config.clone();
    let rules = all_rules(&mut c).any(|r| r.matcher.geosites_mut().into_iter().next().is_some());
    rules || !c.dns.sets_mut(true).is_empty()
}

/// Whether `config`'s rules use the country database.
pub(crate) fn uses_geoip(config: &Config) -> bool {
    !geoip_codes(config).is_empty()
}

/// The main rules and every `sub-rules` list's.
fn all_rules(config: &mut Config) -> impl Iterator<Item = &mut tpgate_core::rules::Rule> {
    config.rules.iter_mut().chain(
        config
            .sub_rules
            .iter_mut()
            .flat_map(|(_, list)| list.iter_mut()),
    )
}

/// Loads the lists `GEOSITE` rules name from `geosite-path` (relative to the config file's
/// directory; default `GeoSite.dat` there) into their rules. Only the named lists are kept.
/// Like the country database: a missing default file (a mihomo config counting on mihomo's
/// download) is a warning, returned, and its GEOSITE rules never match; a `geosite-path`
/// that cannot be read, or a list the file lacks, is an error.
pub(crate) fn load_geosite(
    config: &mut Config,
    config_path: Option<&Path>,
) -> Result<Option<String>> {
    let mut names: Vec<String> = all_rules(config)
        .flat_map(|r| r.matcher.geosites_mut())
        .map(|h| h.name().to_owned())
        .collect();
    // `geosite:` entries of fake-ip-filter and nameserver-policy too.
    names.extend(
        config
            .dns
            .sets_mut(true)
            .iter()
            .map(|h| h.name().to_owned()),
    );
    if names.is_empty() {
        return Ok(None);
    }
    names.sort();
    names.dedup();
    let base = crate::providers::config_dir(config_path);
    let path = base.join(config.geosite_path.as_deref().unwrap_or("GeoSite.dat"));
    if !path.exists() {
        match &config.geox.geosite {
            Some(url) => {
                return Ok(Some(format!(
                    "{}: no geosite file yet; GEOSITE rules will not match until `tpgate run` \
                     has downloaded it from {url} (geox-url.geosite)",
                    path.display()
                )))
            }
            None if config.geosite_path.is_none() => {
                return Ok(Some(format!(
                    "{}: no geosite file; GEOSITE rules will not match (put a v2ray \
                     geosite.dat there, set `geosite-path`, or set `geox-url.geosite` to have \
                     tpgate download it)",
                    path.display()
                )))
            }
            None => {}
        }
    }
    let data = std::fs::read(&path).with_context(|| {
        format!(
            "{}: GEOSITE rules need a geosite file (set `geosite-path`)",
            path.display()
        )
    })?;
    let sets = tpgate_core::rules::geosite_sets(&data, &names)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut handles = std::collections::HashMap::new();
    for (name, set) in sets {
        let h = tpgate_core::rules::RuleSetHandle::new(&name);
        h.replace(set);
        handles.insert(name, h);
    }
    for rule in all_rules(config) {
        for h in rule.matcher.geosites_mut() {
            if let Some(shared) = handles.get(h.name()) {
                *h = shared.clone();
            }
        }
    }
    for h in config.dns.sets_mut(true) {
        if let Some(shared) = handles.get(h.name()) {
            *h = shared.clone();
        }
    }
    config.geosite_path = Some(path.display().to_string());
    Ok(None)
}

#[cfg(test)]
mod ranges_tests {
    use std::collections::BTreeMap;

    use super::GeoIp;

    #[test]
    fn a_country_expands_to_its_networks_of_both_families() {
        let mut w = mmdb_writer::Writer::new("GeoLite2-Country");
        for (net, code) in [
            ("203.0.113.0/25", "ZZ"),
            ("203.0.113.128/25", "YY"),
            ("2001:db8:2::/48", "ZZ"),
            ("198.51.100.0/24", "YY"),
        ] {
            let record: BTreeMap<&str, BTreeMap<&str, &str>> =
                [("country", [("iso_code", code)].into())].into();
            w.insert(net.parse::<ipnet::IpNet>().unwrap(), &record)
                .unwrap();
        }
        let dir = std::env::temp_dir().join(format!("tpgate-geo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("Country.mmdb");
        std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
        let db = GeoIp::open(&path).unwrap();
        let mut zz: Vec<String> = db.ranges("zz").iter().map(ToString::to_string).collect();
        zz.sort();
        assert_eq!(zz, ["2001:db8:2::/48", "203.0.113.0/25"]);
        assert!(db.ranges("XX").is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
