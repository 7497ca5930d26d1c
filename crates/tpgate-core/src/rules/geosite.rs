//! `GEOSITE` lists from a v2ray `geosite.dat` (the protobuf `GeoSiteList` of v2fly's
//! domain-list-community, which mihomo reads as `GeoSite.dat`). Decoding is pure: the daemon
//! hands the file's bytes over, and each list a rule names becomes a [`RuleSet`].
//! `GEOSITE,name@attr` keeps only the entries carrying that attribute.

use std::collections::HashMap;

use super::ruleset::RuleSet;
use super::Matcher;

/// v2ray's `routercommon.GeoSiteList`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GeoSiteList {
    #[prost(message, repeated, tag = "1")]
    pub entry: Vec<GeoSite>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GeoSite {
    #[prost(string, tag = "1")]
    pub country_code: String,
    #[prost(message, repeated, tag = "2")]
    pub domain: Vec<SiteDomain>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SiteDomain {
    /// 0 plain (keyword), 1 regex, 2 root domain (suffix), 3 full (exact).
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(message, repeated, tag = "3")]
    pub attribute: Vec<SiteAttribute>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SiteAttribute {
    #[prost(string, tag = "1")]
    pub key: String,
}

/// Builds the sets for `names` (as written in rules: `cn`, `category-ads-all@cn`, any
/// case) from a geosite.dat; names the file lacks are an error listing them.
pub fn geosite_sets(data: &[u8], names: &[String]) -> Result<HashMap<String, RuleSet>, String> {
    let list = <GeoSiteList as prost::Message>::decode(data)
        .map_err(|e| format!("not a v2ray geosite.dat: {e}"))?;
    let mut out = HashMap::new();
    let mut missing = Vec::new();
    for name in names {
        let (code, attr) = match name.split_once('@') {
            Some((c, a)) => (c, Some(a.to_ascii_lowercase())),
            None => (name.as_str(), None),
        };
        let Some(site) = list
            .entry
            .iter()
            .find(|s| s.country_code.eq_ignore_ascii_case(code))
        else {
            missing.push(name.clone());
            continue;
        };
        let mut set = RuleSet::default();
        for d in &site.domain {
            if attr
                .as_ref()
                .is_some_and(|a| !d.attribute.iter().any(|x| x.key.eq_ignore_ascii_case(a)))
            {
                continue;
            }
            let value = d.value.to_ascii_lowercase();
            match d.r#type {
                0 => set.add_matcher(Matcher::DomainKeyword(value)),
                1 => match super::DomainRegex::new(&d.value) {
                    Ok(r) => set.add_matcher(Matcher::DomainRegex(r)),
                    Err(e) => return Err(format!("list {name}: {e}")),
                },
                2 => set.add_suffix(&value),
                _ => set.add_exact(&value),
            }
        }
        out.insert(name.to_ascii_lowercase(), set);
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "no list named {} in the geosite file",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::net::{Network, Origin};
    use crate::rules::FlowMeta;

    fn domain(t: i32, v: &str, attrs: &[&str]) -> SiteDomain {
        SiteDomain {
            r#type: t,
            value: v.into(),
            attribute: attrs
                .iter()
                .map(|a| SiteAttribute { key: (*a).into() })
                .collect(),
        }
    }

    pub(crate) fn sample() -> Vec<u8> {
        GeoSiteList {
            entry: vec![
                GeoSite {
                    country_code: "CN".into(),
                    domain: vec![
                        domain(2, "cn", &[]),
                        domain(3, "www.baidu.com", &[]),
                        domain(0, "qq", &["ads"]),
                        domain(1, "^ad[0-9]+\\.", &["ads"]),
                    ],
                },
                GeoSite {
                    country_code: "GOOGLE".into(),
                    domain: vec![domain(2, "google.com", &[])],
                },
            ],
        }
        .encode_to_vec()
    }

    fn hit(set: &RuleSet, host: &str) -> bool {
        set.matches(&FlowMeta {
            network: Network::Tcp,
            src: "198.51.100.2:1".parse().unwrap(),
            dst: "203.0.113.2:443".parse().unwrap(),
            origin: Origin::Forwarded,
            host: Some(host),
            process: None,
            geo: None,
        })
    }

    #[test]
    fn lists_and_attributes() {
        let names = ["cn".to_owned(), "Google".to_owned(), "cn@ads".to_owned()];
        let sets = geosite_sets(&sample(), &names).unwrap();
        let cn = &sets["cn"];
        assert!(hit(cn, "www.gov.cn") && hit(cn, "www.baidu.com") && !hit(cn, "baidu.com"));
        assert!(hit(cn, "im.qq.example") && hit(cn, "ad12.example.org"));
        assert!(hit(&sets["google"], "mail.google.com"));
        let ads = &sets["cn@ads"];
        assert!(hit(ads, "qq.example") && !hit(ads, "www.gov.cn"));
        let err = geosite_sets(&sample(), &["nope".to_owned()]).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        assert!(geosite_sets(b"\xff\xff\xff", &names).is_err());
    }
}
