//! Micro-benchmarks of what runs once per connection: deciding a flow against a large rule
//! list (100,000 domain and CIDR rules, as big blocklists are), loading such a config, and
//! the sniffers on real captured client hellos. `cargo bench -p tpgate-core`.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use tpgate_core::config::load;
use tpgate_core::net::{Network, Origin};
use tpgate_core::rules::FlowMeta;
use tpgate_core::sniff::{http, quic::QuicSniffer, tls};

const RULES: usize = 100_000;

/// A config with `RULES` rules: suffixes, exact names, IPv4 and IPv6 CIDRs, a few keyword
/// and port rules, then MATCH.
fn big_config() -> String {
    let mut s = String::from("rules:\n");
    for i in 0..RULES {
        let line = match i % 4 {
            0 => format!("  - DOMAIN-SUFFIX,site{i}.example,REJECT\n"),
            1 => format!("  - DOMAIN,host{i}.example.net,REJECT\n"),
            2 => format!(
                "  - IP-CIDR,{}.{}.{}.0/24,REJECT,no-resolve\n",
                10 + (i >> 16) % 200,
                (i >> 8) % 256,
                i % 256
            ),
            _ => format!(
                "  - IP-CIDR6,2001:db8:{:x}::/48,REJECT,no-resolve\n",
                i % 65536
            ),
        };
        s.push_str(&line);
    }
    s.push_str("  - DOMAIN-KEYWORD,tracker,REJECT\n  - DST-PORT,25,REJECT\n  - MATCH,DIRECT\n");
    s
}

fn flow(host: Option<&str>, dst: &str) -> FlowMeta<'static> {
    let host: Option<&'static str> = host.map(|h| &*Box::leak(h.to_owned().into_boxed_str()));
    FlowMeta {
        network: Network::Tcp,
        src: "198.51.100.2:40000".parse().unwrap(),
        dst: dst.parse().unwrap(),
        origin: Origin::Forwarded,
        host,
        process: None,
        geo: None,
    }
}

fn rules(c: &mut Criterion) {
    let text = big_config();
    let t = Instant::now();
    let loaded = load(&text).expect("config loads");
    eprintln!("loading {RULES} rules took {:?}", t.elapsed());
    let engine = loaded.config.rule_engine();
    let cases = [
        (
            "suffix hit",
            flow(Some("a.b.site40000.example"), "203.0.113.9:443"),
        ),
        (
            "exact hit",
            flow(Some("host99997.example.net"), "203.0.113.9:443"),
        ),
        ("cidr hit", flow(None, "10.1.134.9:443")),
        (
            "miss with name",
            flow(Some("www.unlisted.test"), "203.0.113.9:443"),
        ),
        ("miss without name", flow(None, "203.0.113.9:443")),
    ];
    for (name, f) in &cases {
        c.bench_function(&format!("decide 100k rules: {name}"), |b| {
            b.iter(|| engine.decide(black_box(f)));
        });
    }
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function("load 100k-rule config", |b| {
        b.iter(|| load(black_box(&text)))
    });
    g.finish();
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(path).expect("fixture")
}

fn sniffers(c: &mut Criterion) {
    let hello = fixture("curl.bin");
    c.bench_function("sniff TLS SNI (curl hello)", |b| {
        b.iter(|| tls::sniff_sni(black_box(&hello)));
    });
    let req = fixture("curl-http.bin");
    c.bench_function("sniff HTTP Host (curl)", |b| {
        b.iter(|| http::sniff_host(black_box(&req)));
    });
    let raw = fixture("quic-aioquic-v1.bin");
    let n = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
    let first = raw[2..2 + n].to_vec();
    c.bench_function("sniff QUIC Initial (decrypt + SNI)", |b| {
        b.iter(|| QuicSniffer::new().push(black_box(&first)));
    });
}

criterion_group!(benches, rules, sniffers);
criterion_main!(benches);
