//! The lab's optional WAN switch: a bridge in its own namespace that joins the gateway, the
//! server and extra [`WanHost`]s (one namespace each, at 203.0.113.3, .4, ... and
//! 2001:db8:2::3, ::4, ...) on one segment, so an upstream proxy on a host reaches the server
//! itself and the server sees the host's address. Each host has its own namespace so a test
//! can kill everything in it without touching the others.
//!
//! Deliberately not here: the proxy servers that run on the hosts ([`super::upstreams`]).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::thread::JoinHandle;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{run, Family, Lab, Netns};

/// One extra host on the lab's WAN segment.
#[derive(Debug)]
pub(crate) struct WanHost {
    pub(crate) ns: Netns,
    pub(crate) v4: IpAddr,
    pub(crate) v6: IpAddr,
}

/// The host's only interface (toward the WAN switch).
pub(crate) const HOST_IF: &str = "eth0";

impl WanHost {
    /// Drops what `matching` (an nft match) selects from the gateway (both families) and
    /// counts it from `hop`: only a chain through `hop` reaches this host.
    pub(crate) fn only_through(&self, hop: IpAddr, matching: &str) {
        let (gw4, gw6) = (Family::V4.addrs().gw_wan, Family::V6.addrs().gw_wan);
        self.ns.sh(
            "nft",
            &[&format!(
                "add table inet only; \
                 add chain inet only input {{ type filter hook input priority 0; }}; \
                 add rule inet only input ip saddr {gw4} {matching} drop; \
                 add rule inet only input ip6 saddr {gw6} {matching} drop; \
                 add rule inet only input ip saddr {hop} {matching} counter"
            )],
        );
    }

    /// Packets [`Self::only_through`] counted from `hop`.
    pub(crate) fn through_count(&self, hop: IpAddr) -> u64 {
        let listed = self
            .ns
            .sh("nft", &["list", "chain", "inet", "only", "input"]);
        listed
            .lines()
            .find(|l| l.contains(&format!("ip saddr {hop}")))
            .and_then(|l| l.split("packets ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter for {hop}:\n{listed}"))
    }

    /// The host's address of `family`.
    pub(crate) const fn addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }

    /// Process ids of everything running in the host's namespace (all started by this test:
    /// the namespace is the test's own), never this test process itself.
    pub(crate) fn pids(&self) -> Vec<Pid> {
        let me = std::process::id();
        let out = run("ip", &["netns", "pids", &self.ns.name]);
        out.stdout
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .filter(|&p| p != me)
            .filter_map(|p| i32::try_from(p).ok())
            .map(Pid::from_raw)
            .collect()
    }
}

/// IPv4 and IPv6 addresses of WAN host number `i` (0-based).
fn host_addrs(i: usize) -> (IpAddr, IpAddr) {
    let last = u8::try_from(3 + i).expect("at most 250 hosts");
    (
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, last)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, u16::from(last))),
    )
}

impl Lab {
    /// Builds a lab whose WAN is a switch with `hosts` extra hosts (`lab.hosts[i]` at
    /// 203.0.113.(3+i) and 2001:db8:2::(3+i)), or `None` when not running as root.
    pub(crate) fn with_wan_hosts(tag: &str, hosts: usize) -> Option<Self> {
        assert!(hosts > 0, "use Lab::new for a lab without WAN hosts");
        Self::create(tag, hosts)
    }

    /// Creates the switch namespace with its bridge, plugs the gateway's WAN interface and
    /// the server's `eth0` into it, and creates the hosts (addressed and up). The gateway
    /// and server addresses are set by the caller as in the plain lab.
    pub(super) fn build_wan_switch(&mut self, hosts: usize) {
        let base = self
            .gw
            .name
            .strip_suffix("-g")
            .expect("gateway namespace name ends in -g")
            .to_owned();
        let switch = Netns {
            name: format!("{base}-w"),
        };
        self.add_netns(&switch.name);
        // Bridged frames only; the switch needs no addresses of its own.
        switch.sh("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        switch.sh("sysctl", &["-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        switch.ip(&["link", "set", "lo", "up"]);
        switch.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ]);
        switch.ip(&["link", "set", "br0", "up"]);
        let plug = |port: &str| {
            switch.ip(&["link", "set", port, "master", "br0"]);
            switch.ip(&["link", "set", port, "up"]);
        };
        self.gw.ip(&[
            "link",
            "add",
            &self.wan_if,
            "type",
            "veth",
            "peer",
            "name",
            "pgw",
            "netns",
            &switch.name,
        ]);
        plug("pgw");
        self.server.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "psrv",
            "netns",
            &switch.name,
        ]);
        plug("psrv");

        for i in 0..hosts {
            let ns = Netns {
                name: format!("{base}-h{i}"),
            };
            self.add_netns(&ns.name);
            ns.sh("sysctl", &["-qw", "net.ipv6.conf.all.accept_dad=0"]);
            ns.sh("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"]);
            ns.ip(&["link", "set", "lo", "up"]);
            let port = format!("ph{i}");
            ns.ip(&[
                "link",
                "add",
                HOST_IF,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &switch.name,
            ]);
            plug(&port);
            let (v4, v6) = host_addrs(i);
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", HOST_IF]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", HOST_IF, "nodad"]);
            ns.ip(&["link", "set", HOST_IF, "up"]);
            self.hosts.push(WanHost { ns, v4, v6 });
        }
        self.wan_switch = Some(switch);
    }

    /// Gives the server `n` more IPv4 addresses on the WAN (203.0.113.100, .101, ...), as
    /// distinct destinations; returns them.
    pub(crate) fn add_server_v4_addrs(&self, n: u8) -> Vec<IpAddr> {
        assert!(n <= 100, "at most 100 extra server addresses");
        (0..n)
            .map(|i| {
                let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 100 + i));
                self.server
                    .ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
                ip
            })
            .collect()
    }

    /// `ip netns add name`, remembered for deletion on drop.
    fn add_netns(&mut self, name: &str) {
        run("ip", &["netns", "add", name]).ok_or_panic();
        self.created.push(name.to_owned());
    }

    /// SIGKILLs whatever still runs in the hosts' namespaces (upstream servers and their
    /// children): deleting a namespace does not end the processes inside it.
    pub(super) fn stop_host_processes(&self) {
        for host in &self.hosts {
            for pid in host.pids() {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
}

impl Netns {
    /// Runs `f` on a new, detached thread that has entered this namespace; threads it
    /// spawns (a tokio runtime's workers) live in the namespace too.
    pub(crate) fn spawn_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = Path::new("/run/netns").join(&self.name);
        let name = self.name.clone();
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            setns(&ns, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {name}: {e}"));
            f()
        })
    }
}
