//! mihomo's binary rule-set format, `mrs` (behaviours `domain` and `ipcidr`), read into the
//! entries a text provider would have, so both go through one matcher. The facts, from
//! mihomo's `rules/provider/mrs_reader.go`, `component/trie/domain_set*.go` and
//! `component/cidr/ipcidr_set_bin.go`:
//!
//! - the file is one zstd stream; inside: `MRS` 1, the behaviour byte (0 domain, 1
//!   ipcidr), the entry count and the length of an extra block (big-endian i64 each),
//!   the extra block, then the set, which starts with its own version byte 1;
//! - ipcidr: the number of ranges (i64), then each range as two 16-byte addresses (IPv4
//!   mapped into IPv6), first and last;
//! - domain: a succinct trie (LOUDS) of the *reversed* names: `leaves` and `labelBitmap`
//!   (u64 words, each list preceded by its length) and `labels` (bytes, preceded by its
//!   length). Nodes are numbered breadth-first; a node's labels are the 0 bits up to its 1
//!   bit, label `k` (counting every 0 bit before it) leads to node `k + 1`, and a node is
//!   the end of a name when its bit in `leaves` is set. A name `+.x` stored in the trie
//!   means "below x" (mihomo stores `+.x` as `x` plus that), `*` is one label.

use std::io::Read;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

use super::Behavior;

/// Decompressed size accepted (community lists are a few MiB).
const MAX_SIZE: u64 = 256 << 20;

/// The entries of an mrs file as text lines (`name`, `.name`, `*.name`, CIDRs), or why it
/// cannot be read.
pub fn mrs_entries(bytes: &[u8], behavior: Behavior) -> Result<Vec<String>, String> {
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(bytes)
        .map_err(|e| format!("not an mrs file (zstd): {e}"))?;
    let mut data = Vec::new();
    (&mut decoder)
        .take(MAX_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("not an mrs file (zstd): {e}"))?;
    if data.len() as u64 > MAX_SIZE {
        return Err(format!(
            "an mrs file larger than {MAX_SIZE} bytes decompressed"
        ));
    }
    let mut r = Cursor { data: &data, at: 0 };
    if r.take(4)? != b"MRS\x01" {
        return Err("not an mrs file (no MRS 1 header)".to_owned());
    }
    let kind = r.take(1)?[0];
    let want = match behavior {
        Behavior::Domain => 0,
        Behavior::IpCidr => 1,
        Behavior::Classical => {
            return Err("mrs files hold domain or ipcidr sets, not classical".to_owned())
        }
    };
    if kind != want {
        let found = match kind {
            0 => "domain",
            1 => "ipcidr",
            _ => "unknown",
        };
        return Err(format!(
            "the file holds a {found} set, the provider says behavior: {}",
            behavior.name()
        ));
    }
    let _count = r.i64()?;
    let extra = r.len()?;
    r.take(extra)?;
    if r.take(1)?[0] != 1 {
        return Err("unknown mrs set version".to_owned());
    }
    match behavior {
        Behavior::Domain => domains(&mut r),
        _ => ranges(&mut r),
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len());
        let end = end.ok_or("the mrs file ends early")?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn i64(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// A length: non-negative and no longer than what is left.
    fn len(&mut self) -> Result<usize, String> {
        let n = self.i64()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.data.len())
            .ok_or_else(|| format!("invalid length {n} in the mrs file"))
    }

    fn words(&mut self) -> Result<Vec<u64>, String> {
        let n = self.len()?;
        let bytes = self.take(n.checked_mul(8).ok_or("invalid length")?)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_be_bytes(a)
            })
            .collect())
    }
}

fn ranges(r: &mut Cursor<'_>) -> Result<Vec<String>, String> {
    let n = r.len()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let from = addr(r.take(16)?);
        let to = addr(r.take(16)?);
        for net in range_nets(from, to)? {
            out.push(net.to_string());
        }
    }
    Ok(out)
}

fn addr(b: &[u8]) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The fewest CIDRs covering `from..=to`.
fn range_nets(from: IpAddr, to: IpAddr) -> Result<Vec<IpNet>, String> {
    let (bits, a, b) = match (from, to) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            (32u32, u128::from(u32::from(a)), u128::from(u32::from(b)))
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => (128, u128::from(a), u128::from(b)),
        _ => return Err(format!("a range from {from} to {to} mixes families")),
    };
    if a > b {
        return Err(format!("a range from {from} to {to} ends before it starts"));
    }
    let mut out = Vec::new();
    let mut at = a;
    loop {
        // The largest block aligned at `at` that stays within `b`.
        let mut size = if at == 0 {
            bits
        } else {
            at.trailing_zeros().min(bits)
        };
        let span = |size: u32| {
            if size >= 128 {
                u128::MAX
            } else {
                (1u128 << size) - 1
            }
        };
        while size > 0 && at.checked_add(span(size)).is_none_or(|end| end > b) {
            size -= 1;
        }
        let prefix = u8::try_from(bits - size).unwrap_or(0);
        let net = if bits == 32 {
            let v4 = std::net::Ipv4Addr::from(u32::try_from(at).unwrap_or(0));
            IpNet::new(IpAddr::V4(v4), prefix)
        } else {
            IpNet::new(IpAddr::V6(Ipv6Addr::from(at)), prefix)
        }
        .map_err(|e| e.to_string())?;
        out.push(net);
        let end = at.saturating_add(span(size));
        if end >= b {
            return Ok(out);
        }
        at = end + 1;
    }
}

fn bit(words: &[u64], i: usize) -> bool {
    words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Every name of the trie, as text entries.
fn domains(r: &mut Cursor<'_>) -> Result<Vec<String>, String> {
    let leaves = r.words()?;
    let bitmap = r.words()?;
    let n = r.len()?;
    let labels = r.take(n)?;
    // starts[i]: the index of node i's first label; a node ends at its 1 bit.
    let mut starts = vec![0usize];
    let mut zeros = 0usize;
    for i in 0..bitmap.len() * 64 {
        if bit(&bitmap, i) {
            starts.push(zeros);
        } else {
            zeros += 1;
        }
        if zeros > labels.len() {
            break;
        }
    }
    let nodes = starts.len() - 1;
    let mut out = Vec::new();
    let mut stack: Vec<(usize, Vec<u8>)> = vec![(0, Vec::new())];
    let mut budget = 64usize << 20;
    while let Some((node, key)) = stack.pop() {
        if node >= nodes {
            return Err("a broken trie in the mrs file".to_owned());
        }
        if bit(&leaves, node) && !key.is_empty() {
            out.push(entry(&key));
        }
        let (first, end) = (starts[node], starts[node + 1]);
        for k in (first..end).rev() {
            let Some(&label) = labels.get(k) else {
                return Err("a broken trie in the mrs file".to_owned());
            };
            let child = k + 1;
            budget = budget
                .checked_sub(key.len() + 1)
                .ok_or("an mrs trie too large")?;
            // Breadth-first numbering: a child always comes after its parent.
            if child <= node {
                return Err("a broken trie in the mrs file".to_owned());
            }
            let mut next = key.clone();
            next.push(label);
            stack.push((child, next));
        }
    }
    out.sort();
    Ok(out)
}

/// A reversed key -> a text entry: `+.x` (below x only in the trie) becomes `.x`.
fn entry(reversed: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(reversed).chars().rev().collect();
    match text.strip_prefix("+.") {
        Some(rest) => format!(".{rest}"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_cidrs() {
        let nets = |a: &str, b: &str| -> Vec<String> {
            range_nets(a.parse().unwrap(), b.parse().unwrap())
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(nets("192.0.2.0", "192.0.2.255"), ["192.0.2.0/24"]);
        assert_eq!(
            nets("192.0.2.1", "192.0.2.4"),
            ["192.0.2.1/32", "192.0.2.2/31", "192.0.2.4/32"]
        );
        assert_eq!(nets("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(
            nets("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ["::/0"]
        );
        assert_eq!(nets("2001:db8::", "2001:db8::1"), ["2001:db8::/127"]);
        assert!(range_nets("192.0.2.2".parse().unwrap(), "192.0.2.1".parse().unwrap()).is_err());
    }

    use crate::net::{Network, Origin};
    use crate::rules::{FlowMeta, Format, RuleSet};
    use proptest::prelude::*;

    // Real files from MetaCubeX/meta-rules-dat (branch meta), next to their text twins;
    // see tests/fixtures/mrs/README.md.
    const ADOBE_MRS: &[u8] = include_bytes!("../../tests/fixtures/mrs/geosite-adobe.mrs");
    const ADOBE_LIST: &str = include_str!("../../tests/fixtures/mrs/geosite-adobe.list");
    const ALIYUN_MRS: &[u8] = include_bytes!("../../tests/fixtures/mrs/geosite-aliyun.mrs");
    const ALIYUN_LIST: &str = include_str!("../../tests/fixtures/mrs/geosite-aliyun.list");
    const BV_MRS: &[u8] = include_bytes!("../../tests/fixtures/mrs/geoip-bv.mrs");
    const BV_LIST: &str = include_str!("../../tests/fixtures/mrs/geoip-bv.list");

    fn twins(mrs: &[u8], list: &str, b: Behavior) -> (RuleSet, RuleSet) {
        let (from_mrs, w) = RuleSet::parse_bytes(b, Format::Mrs, mrs).unwrap();
        assert!(w.is_empty(), "{w:?}");
        let (from_text, _) = RuleSet::parse(b, Format::Text, list).unwrap();
        (from_mrs, from_text)
    }

    fn verdict(set: &RuleSet, host: Option<&str>, dst: std::net::SocketAddr) -> bool {
        set.matches(&FlowMeta {
            network: Network::Tcp,
            src: "198.51.100.2:1000".parse().unwrap(),
            dst,
            origin: Origin::Forwarded,
            host,
            process: None,
            geo: None,
        })
    }

    /// Names near the list's: each entry, its parent, a child, a sibling, a lookalike.
    fn names(list: &str) -> Vec<String> {
        let mut out = Vec::new();
        for l in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let base = l.trim_start_matches("+.").trim_start_matches('.');
            out.push(base.to_owned());
            out.push(format!("www.{base}"));
            out.push(format!("a.b.{base}"));
            out.push(format!("x{base}"));
            if let Some((_, parent)) = base.split_once('.') {
                out.push(parent.to_owned());
            }
        }
        out
    }

    #[test]
    fn real_files_read_like_their_text_twins() {
        for (mrs, list) in [(ADOBE_MRS, ADOBE_LIST), (ALIYUN_MRS, ALIYUN_LIST)] {
            let (a, b) = twins(mrs, list, Behavior::Domain);
            assert!(a.len() > 10);
            let dst = "203.0.113.9:443".parse().unwrap();
            for n in names(list) {
                assert_eq!(
                    verdict(&a, Some(&n), dst),
                    verdict(&b, Some(&n), dst),
                    "{n}"
                );
            }
        }
        let (a, b) = twins(BV_MRS, BV_LIST, Behavior::IpCidr);
        assert!(a.len() >= 10);
        for l in BV_LIST.lines() {
            let net: IpNet = l.trim().parse().unwrap();
            for ip in [net.network(), net.broadcast()] {
                let dst = std::net::SocketAddr::new(ip, 443);
                assert!(verdict(&a, None, dst), "{ip}");
                assert_eq!(verdict(&a, None, dst), verdict(&b, None, dst), "{ip}");
            }
        }
        // A domain file read as ipcidr (and the reverse) says so.
        assert!(RuleSet::parse_bytes(Behavior::IpCidr, Format::Mrs, ADOBE_MRS).is_err());
        assert!(RuleSet::parse_bytes(Behavior::Domain, Format::Mrs, BV_MRS).is_err());
    }

    proptest! {
        #[test]
        fn twins_agree_on_any_name(
            pick in 0usize..400,
            prefix in "[a-z0-9]{0,6}",
            dots in 0usize..3,
        ) {
            let (a, b) = twins(ALIYUN_MRS, ALIYUN_LIST, Behavior::Domain);
            let all = names(ALIYUN_LIST);
            let base = &all[pick % all.len()];
            let name = match dots {
                0 => format!("{prefix}{base}"),
                1 => format!("{prefix}.{base}"),
                _ => format!("{prefix}.{prefix}.{base}"),
            };
            let name = name.trim_start_matches('.');
            let dst = "203.0.113.9:443".parse().unwrap();
            prop_assert_eq!(verdict(&a, Some(name), dst), verdict(&b, Some(name), dst));
        }

        #[test]
        fn twins_agree_on_any_address(v4 in any::<u32>(), v6 in any::<u128>(), near in 0usize..64) {
            let (a, b) = twins(BV_MRS, BV_LIST, Behavior::IpCidr);
            let line = BV_LIST.lines().nth(near % BV_LIST.lines().count()).unwrap();
            let net: IpNet = line.trim().parse().unwrap();
            let close = match net.network() {
                IpAddr::V4(n) => IpAddr::V4((u32::from(n) ^ (v4 & 0xff)).into()),
                IpAddr::V6(n) => IpAddr::V6((u128::from(n) ^ (v6 & 0xffff)).into()),
            };
            for ip in [IpAddr::V4(v4.into()), IpAddr::V6(v6.into()), close] {
                let dst = std::net::SocketAddr::new(ip, 443);
                prop_assert_eq!(verdict(&a, None, dst), verdict(&b, None, dst), "{}", ip);
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"MRS\x01", b"\x28\xb5\x2f\xfd\x00\x00"] {
            assert!(mrs_entries(bytes, Behavior::Domain).is_err());
        }
    }
}
