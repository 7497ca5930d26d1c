//! A throwaway three-namespace lab for tpgate's end-to-end tests: `client` on the LAN side,
//! `gw` (where tpgate runs) in the middle, `server` on the WAN side. Every lab has its own
//! uniquely named namespaces, so tests run in parallel, and its `Drop` deletes them even when
//! the test panics. Nothing here touches the root network namespace: links are created
//! directly inside the lab's namespaces and every sysctl is written through `ip netns exec`.
//!
//! Deliberately not here: the tpgate process ([`daemon`], and as the systemd unit runs it:
//! [`unprivileged`]), the echo peers ([`peers`]), the optional WAN switch with extra hosts
//! for upstream proxies ([`wan`]), the real upstream proxy servers ([`upstreams`]) and the
//! minimal proxy clients and HTTP helpers ([`clients`]).
//!
//! Run as root: `cargo test -p tpgate --test e2e_tcp` (also `e2e_udp`, `e2e_lifecycle`,
//! `e2e_lab`); without root every test prints `SKIPPED` and passes. Needs `ip` (iproute2),
//! `nft` and, for the iptables backend (`TPGATE_E2E_BACKEND`, `e2e_iptables`), `iptables`.
//! `TPGATE_TEST_BIN=path` tests another tpgate binary than cargo's build.
// Each test binary uses a different part of the lab.
#![allow(dead_code, unused_imports)]

mod clients;
mod daemon;
mod delay;
mod dns_client;
mod fake_dns;
mod files;
mod http;
mod names;
mod patient;
mod peers;
mod process;
mod proxy_config;
mod through;
mod unprivileged;
mod upstreams;
mod wan;
mod wheel;

pub(crate) use clients::*;
pub(crate) use daemon::*;
pub(crate) use delay::*;
pub(crate) use dns_client::*;
pub(crate) use fake_dns::*;
pub(crate) use files::*;
pub(crate) use http::*;
pub(crate) use names::*;
pub(crate) use patient::*;
pub(crate) use peers::*;
pub(crate) use process::*;
pub(crate) use proxy_config::*;
pub(crate) use through::*;
pub(crate) use unprivileged::*;
pub(crate) use upstreams::*;
pub(crate) use wan::*;
pub(crate) use wheel::*;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

/// IP family of one test case; most tests run once per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

/// The lab's addresses, all from the documentation ranges.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addrs {
    /// The LAN client.
    pub(crate) client: IpAddr,
    /// The gateway's address on the LAN.
    pub(crate) gw_lan: IpAddr,
    /// The gateway's address on the WAN: what the server sees for relayed traffic.
    pub(crate) gw_wan: IpAddr,
    /// The server.
    pub(crate) server: IpAddr,
    /// An extra address of the server inside the configured bypass range.
    pub(crate) server_bypass: IpAddr,
}

impl Family {
    pub(crate) const fn addrs(self) -> Addrs {
        match self {
            Self::V4 => Addrs {
                client: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
                gw_lan: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
                gw_wan: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
                server: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2)),
                server_bypass: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            },
            Self::V6 => Addrs {
                client: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2)),
                gw_lan: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)),
                gw_wan: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1)),
                server: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2)),
                server_bypass: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 2)),
            },
        }
    }

    /// The unspecified address of this family, to bind client sockets.
    pub(crate) const fn any(self) -> SocketAddr {
        match self {
            Self::V4 => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            Self::V6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        }
    }
}

/// The bypass ranges the lab's config lists (the server's extra addresses live there).
pub(crate) const BYPASS_V4: &str = "192.0.2.0/24";
pub(crate) const BYPASS_V6: &str = "2001:db8:3::/64";

/// tpgate's defaults, which the lab config keeps.
pub(crate) const TPROXY_PORT: u16 = 7893;
pub(crate) const ROUTE_TABLE: u32 = 100;

/// The interception backend the lab's configs ask for: `TPGATE_E2E_BACKEND=nftables`
/// (default), `iptables-nft` or `iptables-legacy`, so the whole suite can run against each;
/// a test may also set [`Lab::backend`] itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Nftables,
    IptablesNft,
    IptablesLegacy,
}

impl Backend {
    /// From `TPGATE_E2E_BACKEND`; an unknown value fails the test rather than silently
    /// testing something else.
    pub(crate) fn from_env() -> Self {
        match std::env::var("TPGATE_E2E_BACKEND").as_deref() {
            Err(_) | Ok("" | "nftables") => Self::Nftables,
            Ok("iptables-nft") => Self::IptablesNft,
            Ok("iptables-legacy") => Self::IptablesLegacy,
            Ok(other) => panic!(
                "TPGATE_E2E_BACKEND={other}: expected nftables, iptables-nft or iptables-legacy"
            ),
        }
    }

    pub(crate) const fn is_iptables(self) -> bool {
        !matches!(self, Self::Nftables)
    }

    /// The `intercept` keys that select this backend, indented for the section.
    pub(crate) const fn intercept_keys(self) -> &'static str {
        match self {
            Self::Nftables => "  backend: nftables\n",
            Self::IptablesNft => "  backend: iptables\n  iptables-variant: nft\n",
            Self::IptablesLegacy => "  backend: iptables\n  iptables-variant: legacy\n",
        }
    }
}

/// The `*-save` commands of both iptables variants and families.
pub(crate) const IPTABLES_SAVES: [&str; 4] = [
    "iptables-nft-save",
    "ip6tables-nft-save",
    "iptables-legacy-save",
    "ip6tables-legacy-save",
];

/// Timeout of every helper command (`ip`, `nft`, `tpgate check`...).
pub(crate) const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// One network namespace of a lab, named `/run/netns/<name>`.
#[derive(Debug)]
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    /// Runs `f` on a fresh thread that has entered this namespace. Sockets created by `f`
    /// stay in this namespace for life and may be used from any thread afterwards.
    pub(crate) fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns =
                    File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                setns(&ns, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {}: {e}", self.name));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Runs `prog args...` inside this namespace and returns its output (bounded in time).
    pub(crate) fn exec(&self, prog: &str, args: &[&str]) -> CmdOutput {
        let mut all = vec!["netns", "exec", self.name.as_str(), prog];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Like [`Self::exec`] but panics unless the command succeeds; returns its stdout.
    pub(crate) fn sh(&self, prog: &str, args: &[&str]) -> String {
        self.exec(prog, args).ok_or_panic()
    }

    /// `ip -n <ns> args...`, panicking on failure; returns stdout.
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all).ok_or_panic()
    }

    /// `nft list tables` in this namespace.
    pub(crate) fn nft_tables(&self) -> String {
        self.sh("nft", &["list", "tables"])
    }

    /// `ip [-6] rule` in this namespace.
    pub(crate) fn ip_rules(&self, family: Family) -> String {
        match family {
            Family::V4 => self.ip(&["-4", "rule"]),
            Family::V6 => self.ip(&["-6", "rule"]),
        }
    }

    /// `ip [-6] route show table N` in this namespace; empty also when the kernel has no
    /// such table (never had a route, which `ip` reports as an error).
    pub(crate) fn routes_in_table(&self, family: Family, table: u32) -> String {
        let flag = match family {
            Family::V4 => "-4",
            Family::V6 => "-6",
        };
        let table = table.to_string();
        let out = run(
            "ip",
            &["-n", &self.name, flag, "route", "show", "table", &table],
        );
        if !out.success() && out.stderr.contains("FIB table does not exist") {
            return String::new();
        }
        out.ok_or_panic()
    }
}

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// The three namespaces, wired and addressed; deleted on drop.
pub(crate) struct Lab {
    pub(crate) client: Netns,
    pub(crate) gw: Netns,
    pub(crate) server: Netns,
    /// The gateway's LAN interface (per lab, so tpgate must take it from the config).
    pub(crate) lan_if: String,
    /// The gateway's WAN interface.
    pub(crate) wan_if: String,
    /// Scratch directory for config files; removed on drop.
    pub(crate) dir: PathBuf,
    /// The WAN switch namespace, when the lab has [`WanHost`]s (see [`Lab::with_wan_hosts`]);
    /// otherwise the gateway and the server are wired directly.
    pub(crate) wan_switch: Option<Netns>,
    /// Extra hosts on the WAN (203.0.113.3, .4, ...), each in its own namespace.
    pub(crate) hosts: Vec<WanHost>,
    /// The backend [`Lab::config_text`] asks for ([`Backend::from_env`] unless a test sets it).
    pub(crate) backend: Backend,
    /// Namespaces created so far, deleted on drop (also after a half-built lab).
    created: Vec<String>,
}

/// Whether this process may build labs (root); prints why not.
pub(crate) fn can_run(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    if euid == Some(0) {
        true
    } else {
        eprintln!("SKIPPED {test}: network-namespace tests need root (euid {euid:?})");
        false
    }
}

impl Lab {
    /// Builds a lab, or returns `None` (after saying so) when not running as root.
    /// `tag` is a short word naming the test, shown in the namespace names.
    pub(crate) fn new(tag: &str) -> Option<Self> {
        Self::create(tag, 0)
    }

    /// Builds a lab with `hosts` [`WanHost`]s, or `None` when not running as root.
    fn create(tag: &str, hosts: usize) -> Option<Self> {
        if !can_run(tag) {
            return None;
        }
        let pid = std::process::id();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(10)
            .collect();
        // Before anything is created: a bad TPGATE_E2E_BACKEND must leave nothing behind.
        let backend = Backend::from_env();
        let base = format!("tpg-{tag}-{pid}-{n}");
        let dir = std::env::temp_dir().join(&base);
        std::fs::create_dir_all(&dir).expect("create lab scratch dir");
        let mut lab = Self {
            client: Netns {
                name: format!("{base}-c"),
            },
            gw: Netns {
                name: format!("{base}-g"),
            },
            server: Netns {
                name: format!("{base}-s"),
            },
            // ≤ 15 chars: "lan" + pid in hex (≤ 6) + lab number.
            lan_if: format!("lan{pid:x}n{n}"),
            wan_if: "wan0".to_owned(),
            dir,
            wan_switch: None,
            hosts: Vec::new(),
            backend,
            created: Vec::new(),
        };
        lab.build(hosts);
        Some(lab)
    }

    fn build(&mut self, hosts: usize) {
        for name in [&self.client.name, &self.gw.name, &self.server.name] {
            run("ip", &["netns", "add", name]).ok_or_panic();
            self.created.push(name.clone());
        }
        if hosts > 0 {
            self.build_wan_switch(hosts);
        }
        let (c, g, s) = (&self.client, &self.gw, &self.server);
        for ns in [c, g, s] {
            ns.sh("sysctl", &["-qw", "net.ipv6.conf.all.accept_dad=0"]);
            ns.sh("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"]);
            ns.ip(&["link", "set", "lo", "up"]);
        }
        // Both ends are created inside the lab: the root namespace never sees them.
        g.ip(&[
            "link",
            "add",
            &self.lan_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &c.name,
        ]);
        if self.wan_switch.is_none() {
            g.ip(&[
                "link",
                "add",
                &self.wan_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &s.name,
            ]);
        }

        let v4 = Family::V4.addrs();
        let v6 = Family::V6.addrs();
        let addr = |ns: &Netns, ip: IpAddr, len: u8, dev: &str| {
            let cidr = format!("{ip}/{len}");
            match ip {
                IpAddr::V4(_) => ns.ip(&["addr", "add", &cidr, "dev", dev]),
                IpAddr::V6(_) => ns.ip(&["addr", "add", &cidr, "dev", dev, "nodad"]),
            };
        };
        addr(c, v4.client, 24, "eth0");
        addr(c, v6.client, 64, "eth0");
        addr(g, v4.gw_lan, 24, &self.lan_if);
        addr(g, v6.gw_lan, 64, &self.lan_if);
        addr(g, v4.gw_wan, 24, &self.wan_if);
        addr(g, v6.gw_wan, 64, &self.wan_if);
        addr(s, v4.server, 24, "eth0");
        addr(s, v6.server, 64, "eth0");
        addr(s, v4.server_bypass, 32, "lo");
        addr(s, v6.server_bypass, 128, "lo");
        c.ip(&["link", "set", "eth0", "up"]);
        s.ip(&["link", "set", "eth0", "up"]);
        g.ip(&["link", "set", &self.lan_if, "up"]);
        g.ip(&["link", "set", &self.wan_if, "up"]);

        c.ip(&[
            "-4",
            "route",
            "add",
            "default",
            "via",
            &v4.gw_lan.to_string(),
        ]);
        c.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &v6.gw_lan.to_string(),
        ]);
        s.ip(&[
            "-4",
            "route",
            "add",
            "default",
            "via",
            &v4.gw_wan.to_string(),
        ]);
        s.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &v6.gw_wan.to_string(),
        ]);
        g.ip(&[
            "-4",
            "route",
            "add",
            BYPASS_V4,
            "via",
            &v4.server.to_string(),
        ]);
        g.ip(&[
            "-6",
            "route",
            "add",
            BYPASS_V6,
            "via",
            &v6.server.to_string(),
        ]);
        g.sh("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        g.sh("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"]);
    }

    /// The standard lab config: intercept the LAN and the gateway itself, TCP and UDP,
    /// IPv4 and IPv6; port 25 rejected, 26 dropped, everything else DIRECT.
    pub(crate) fn config_text(&self) -> String {
        format!(
            "tproxy-port: {TPROXY_PORT}\n\
             routing-mark: 255\n\
             ipv6: true\n\
             intercept:\n\
             {backend}  \
               lan-interfaces: [{lan}]\n  \
               local: true\n  \
               udp: true\n  \
               bypass:\n    \
                 - {BYPASS_V4}\n    \
                 - \"{BYPASS_V6}\"\n\
             rules:\n  \
               - DST-PORT,25,REJECT\n  \
               - DST-PORT,26,REJECT-DROP\n  \
               - MATCH,DIRECT\n",
            backend = self.backend.intercept_keys(),
            lan = self.lan_if,
        )
    }

    /// Writes `text` to `<scratch>/<name>` and returns the path.
    pub(crate) fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write lab file");
        path
    }

    /// Writes the standard config and returns its path.
    pub(crate) fn write_config(&self) -> PathBuf {
        self.write_file("tpgate.yaml", &self.config_text())
    }

    /// Everything tpgate could leave behind in the gateway, to compare before and after.
    /// With an iptables backend, `tables` holds the nftables tables that iptables-nft does
    /// not manage (those stay, empty, after tpgate leaves) and every line of either
    /// variant's rules that names a `TPGATE_` chain.
    pub(crate) fn gw_state(&self) -> GwState {
        let tables = if self.backend.is_iptables() {
            self.gw_iptables_state()
        } else {
            self.gw.nft_tables()
        };
        GwState {
            tables,
            rules_v4: self.gw.ip_rules(Family::V4),
            rules_v6: self.gw.ip_rules(Family::V6),
            routes_v4: self.gw.routes_in_table(Family::V4, ROUTE_TABLE),
            routes_v6: self.gw.routes_in_table(Family::V6, ROUTE_TABLE),
        }
    }
}

impl Lab {
    fn gw_iptables_state(&self) -> String {
        let managed = [
            "table ip mangle",
            "table ip6 mangle",
            "table ip filter",
            "table ip6 filter",
        ];
        let mut out: Vec<String> = self
            .gw
            .nft_tables()
            .lines()
            .filter(|l| !managed.contains(&l.trim()))
            .map(str::to_owned)
            .collect();
        for save in IPTABLES_SAVES {
            out.extend(
                self.gw
                    .sh(save, &[])
                    .lines()
                    .filter(|l| l.contains("TPGATE_"))
                    .map(|l| format!("{save}: {l}")),
            );
        }
        out.join("\n")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_host_processes();
        for name in self.created.iter().rev() {
            // A SIGKILLed tpgate leaves its (released) lock file in the host's /run.
            if let Some(lock) = lock_file(name) {
                let _ = std::fs::remove_file(lock);
            }
            let out = run("ip", &["netns", "del", name]);
            if !out.success() {
                eprintln!("lab cleanup: ip netns del {name} failed: {}", out.stderr);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A snapshot of the gateway's firewall tables, policy rules and tpgate's route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GwState {
    pub(crate) tables: String,
    pub(crate) rules_v4: String,
    pub(crate) rules_v6: String,
    pub(crate) routes_v4: String,
    pub(crate) routes_v6: String,
}

impl GwState {
    /// `table inet tpgate`, or (iptables backends) any chain or jump of tpgate's.
    pub(crate) fn has_tpgate_table(&self) -> bool {
        self.tables
            .lines()
            .any(|l| l.trim() == "table inet tpgate" || l.contains("TPGATE_"))
    }

    /// Whether the default fwmark rule (`fwmark 0x1 lookup 100`) is present, per family.
    pub(crate) fn fwmark_rules(&self) -> (bool, bool) {
        let has = |rules: &str| {
            rules
                .lines()
                .any(|l| l.contains("fwmark 0x1") && l.contains(&format!("lookup {ROUTE_TABLE}")))
        };
        (has(&self.rules_v4), has(&self.rules_v6))
    }

    /// Whether the `local default dev lo` route is in the table, per family.
    pub(crate) fn local_routes(&self) -> (bool, bool) {
        let has = |routes: &str| routes.lines().any(|l| l.contains("local default dev lo"));
        (has(&self.routes_v4), has(&self.routes_v6))
    }
}

mod api;
pub(crate) use api::*;
