//! A v2ray `geoip.dat` (`geodata-mode`, downloaded from `geox-url.geoip`) must decode or
//! fail cleanly, whatever the bytes; the categories built from it hold only networks of the
//! right family and prefix, and answer lookups without panicking. The first byte picks
//! which categories the rules ask for.

use std::net::IpAddr;

use tpgate_core::rules::geoip_dat_categories;

/// One input: no panic, and the invariants above.
pub fn run(data: &[u8]) {
    let Some((&sel, file)) = data.split_first() else {
        return;
    };
    let all = ["cn", "TELEGRAM", "private", "us", "x"];
    let names: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| sel & (1 << i) != 0)
        .map(|(_, n)| (*n).to_owned())
        .collect();
    let Ok(cats) = geoip_dat_categories(file, &names) else {
        return;
    };
    assert_eq!(cats.len(), names.len(), "one category per name asked");
    let probes: [IpAddr; 3] = [
        [203, 0, 113, 2].into(),
        [0x2001, 0xdb8, 2, 0, 0, 0, 0, 2].into(),
        [0, 0, 0, 0].into(),
    ];
    for (name, c) in &cats {
        assert_eq!(name, &name.to_ascii_uppercase());
        for n in &c.nets {
            assert_eq!(n, &n.trunc(), "networks are normalised");
        }
        for ip in probes {
            let _ = c.contains(ip);
        }
    }
}
