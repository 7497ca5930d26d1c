//! Checks on the machine around the ruleset: kernel support, sysctls, the listener, and
//! other firewall software.

use super::model::{Chain, Cond, Hook, Placed};
use super::{Area, Finding, IptVariant, Severity, Snapshot};
use crate::plan::Family;

/// (module, what it provides, whether tpgate's default backend needs it).
const MODULES: &[(&str, &str, bool)] = &[
    ("nft_tproxy", "nftables `tproxy` statement", true),
    ("nft_socket", "nftables `socket transparent` match", true),
    ("xt_TPROXY", "iptables TPROXY target", false),
    ("xt_socket", "iptables `-m socket` match", false),
];

pub(super) fn kernel(snap: &Snapshot, flat: &[Placed<'_>], out: &mut Vec<Finding>) {
    const A: Area = Area::Kernel;
    for &(name, what, needed) in MODULES {
        let id = if name.contains("socket") {
            "kernel-socket"
        } else {
            "kernel-tproxy"
        };
        // A rule using it is loaded, so the kernel has it (loaded or built in). xt matches
        // appear in iptables dumps; nft's own expressions in `nft -j` only.
        let world = if name.starts_with("nft_") {
            "nft "
        } else {
            "ip"
        };
        let live = flat.iter().any(|p| {
            p.chain.origin.starts_with(world)
                && if id == "kernel-socket" {
                    p.rule.conds.contains(&Cond::SocketTransparent)
                } else {
                    p.rule.tproxy().is_some()
                }
        });
        if live {
            out.push(Finding::new(
                id,
                A,
                Severity::Ok,
                format!("{name} in use by the live ruleset ({what})"),
            ));
            continue;
        }
        let Some(m) = &snap.modules else {
            out.push(Finding::new(
                id,
                A,
                Severity::Info,
                format!("{name}: module list unreadable"),
            ));
            continue;
        };
        let loaded = m.loaded.iter().any(|l| l == name);
        let builtin = m.builtin.as_ref().map(|b| b.iter().any(|l| l == name));
        let avail = m.available.as_ref().map(|b| b.iter().any(|l| l == name));
        let f = match (loaded, builtin, avail) {
            (true, _, _) => Finding::new(id, A, Severity::Ok, format!("{name} loaded ({what})")),
            (_, Some(true), _) => Finding::new(id, A, Severity::Ok, format!("{name} built in ({what})")),
            (_, _, Some(true)) => Finding::new(id, A, Severity::Ok, format!("{name} loadable ({what})")),
            (_, None, _) | (_, _, None) => Finding::new(id, A, Severity::Info, format!("{name}: not loaded; /lib/modules for this kernel unreadable, cannot tell whether it is available ({what})"))
                .fix(format!("modprobe {name}")),
            _ => Finding::new(id, A, if needed { Severity::Error } else { Severity::Info }, format!("{name} missing: no {what}"))
                .why("the kernel was built without it, so rules using it cannot be loaded")
                .fix("install a kernel with CONFIG_NFT_TPROXY / CONFIG_NETFILTER_XT_TARGET_TPROXY and the socket match (most distribution kernels have them)"),
        };
        out.push(f);
    }
    match &snap.rules {
        Some(r) if !r.is_empty() => out.push(Finding::new("kernel-policy-routing", A, Severity::Ok, "policy routing (ip rule) available")),
        _ => out.push(
            Finding::new("kernel-policy-routing", A, Severity::Warn, "policy routing rules could not be listed")
                .why("TPROXY needs `ip rule fwmark ... lookup <table>` (CONFIG_IP_MULTIPLE_TABLES) to deliver marked packets locally")
                .fix("ip rule list   # must work; install iproute2 or a kernel with CONFIG_IP_MULTIPLE_TABLES"),
        ),
    }
    let wants_v6 = snap.expect.as_ref().is_none_or(|e| e.ipv6);
    if snap.ipv6 {
        out.push(Finding::new("kernel-ipv6", A, Severity::Ok, "IPv6 enabled"));
    } else if wants_v6 && snap.expect.is_some() {
        out.push(
            Finding::new(
                "kernel-ipv6",
                A,
                Severity::Warn,
                "IPv6 is disabled in this kernel but the config enables it",
            )
            .why("IPv6 policy rules and listeners cannot be installed")
            .fix("ipv6: false   # in tpgate's config"),
        );
    }
    if let Some(rel) = &snap.kernel_release {
        let mut it = rel
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<u32>().ok());
        let ver = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        if ver >= (5, 12) {
            out.push(Finding::new(
                "kernel-owner-flag",
                A,
                Severity::Ok,
                format!("kernel {rel} supports the nftables table owner flag"),
            ));
        } else {
            out.push(Finding::new("kernel-owner-flag", A, Severity::Warn, format!("kernel {rel} is older than 5.12: no nftables owner flag"))
                .why("tpgate's table is not removed by the kernel when the process dies; a crash leaves interception pointing at a dead port")
                .fix("run tpgate from the systemd unit (ExecStopPost=tpgate down) or run `sudo tpgate down` after a crash"));
        }
    }
}

/// `offload-direct` forwards LAN flows to its ranges with the client's own source address:
/// something on the way out must masquerade or SNAT them, or the replies never come back.
pub(super) fn offload(snap: &Snapshot, out: &mut Vec<Finding>) {
    const A: Area = Area::Sysctl;
    let Some(e) = &snap.expect else { return };
    if !e.offload || e.lan_interfaces.is_empty() {
        return;
    }
    let nat = |t: &str| {
        let l = t.to_ascii_lowercase();
        l.contains("masquerade") || l.contains("snat")
    };
    let found =
        snap.nft_json.as_deref().is_some_and(nat) || snap.iptables.iter().any(|d| nat(&d.text));
    if found {
        out.push(Finding::new(
            "offload-masquerade",
            A,
            Severity::Ok,
            "a masquerade/SNAT rule exists for LAN flows left to the kernel (offload-direct)",
        ));
    } else {
        out.push(
            Finding::new(
                "offload-masquerade",
                A,
                Severity::Warn,
                "offload-direct forwards LAN flows with the client's own address, and no masquerade or SNAT rule was found",
            )
            .why("flows to offloaded destinations are routed, not proxied: a private LAN address leaves the WAN and the replies never find their way back")
            .fix("nft add table ip nat; nft add chain ip nat postrouting '{ type nat hook postrouting priority srcnat; }'; nft add rule ip nat postrouting oifname \"WAN\" masquerade   (or intercept.offload-direct: false)"),
        );
    }
}

fn sysctl<'a>(snap: &'a Snapshot, key: &str) -> Option<&'a str> {
    snap.sysctls.get(key).map(|v| v.trim())
}

pub(super) fn sysctls(snap: &Snapshot, out: &mut Vec<Finding>) {
    const A: Area = Area::Sysctl;
    let Some(e) = &snap.expect else { return };
    if e.lan_interfaces.is_empty() {
        return;
    }
    match sysctl(snap, "net.ipv4.ip_forward") {
        Some("1") => out.push(Finding::new("ip-forward", A, Severity::Ok, "net.ipv4.ip_forward = 1")),
        v => out.push(Finding::new("ip-forward", A, Severity::Error, format!("net.ipv4.ip_forward = {} with lan-interfaces configured", v.unwrap_or("?")))
            .why("a gateway must forward the LAN traffic tpgate does not intercept (bypassed destinations, ICMP); with forwarding off the LAN has no Internet beyond the proxied TCP/UDP")
            .fix("sysctl -w net.ipv4.ip_forward=1 && echo net.ipv4.ip_forward=1 > /etc/sysctl.d/90-tpgate.conf")),
    }
    if e.ipv6 && snap.ipv6 {
        match sysctl(snap, "net.ipv6.conf.all.forwarding") {
            Some("1") => out.push(Finding::new(
                "ipv6-forwarding",
                A,
                Severity::Ok,
                "net.ipv6.conf.all.forwarding = 1",
            )),
            v => out.push(
                Finding::new(
                    "ipv6-forwarding",
                    A,
                    Severity::Warn,
                    format!("net.ipv6.conf.all.forwarding = {}", v.unwrap_or("?")),
                )
                .why("the same for IPv6: LAN IPv6 traffic that is not intercepted is not forwarded")
                .fix("sysctl -w net.ipv6.conf.all.forwarding=1"),
            ),
        }
    }
    let num = |k: &str| {
        sysctl(snap, k)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let all_rp = num("net.ipv4.conf.all.rp_filter");
    let all_vm = num("net.ipv4.conf.all.src_valid_mark");
    for i in &e.lan_interfaces {
        let if_rp = num(&format!("net.ipv4.conf.{i}.rp_filter"));
        // The kernel uses the larger of `all` and the interface's value.
        let rp = all_rp.max(if_rp);
        let vm = all_vm.max(num(&format!("net.ipv4.conf.{i}.src_valid_mark")));
        let mut fix = Vec::new();
        if all_rp == 1 {
            fix.push("net.ipv4.conf.all.rp_filter=2".to_owned());
        }
        if if_rp == 1 {
            fix.push(format!("net.ipv4.conf.{i}.rp_filter=2"));
        }
        if rp == 1 {
            out.push(Finding::new("rp-filter", A, Severity::Warn, format!("strict rp_filter on {i} (effective max(all={all_rp}, {i}={if_rp}) = 1)"))
                .why("strict reverse-path filtering drops a LAN packet whenever the route back to its source does not leave through the interface it came in on (several LAN subnets, VPN or policy routes); TPROXY setups use loose mode 2")
                .fix(format!("sysctl -w {}", fix.join(" "))));
        } else {
            out.push(Finding::new(
                "rp-filter",
                A,
                Severity::Ok,
                format!("rp_filter on {i} is {rp} (not strict)"),
            ));
        }
        if rp > 0 && vm == 1 {
            out.push(Finding::new("src-valid-mark", A, Severity::Error, format!("src_valid_mark = 1 with rp_filter = {rp} on {i}"))
                .why(format!("the reverse-path check then looks the client's address up *with* the TPROXY mark, lands in the fwmark table whose only route is `local default dev lo`, and drops every intercepted packet from {i}"))
                .fix(format!("sysctl -w net.ipv4.conf.all.src_valid_mark=0 net.ipv4.conf.{i}.src_valid_mark=0   # or rp_filter=0 on {i}")));
        }
    }
}

pub(super) fn listeners(snap: &Snapshot, flat: &[Placed<'_>], out: &mut Vec<Finding>) {
    const A: Area = Area::Listener;
    let mut ports: Vec<u16> = flat
        .iter()
        .filter(|p| p.hook == Hook::Prerouting)
        .filter_map(|p| p.rule.tproxy().and_then(|(port, _)| port))
        .collect();
    if let Some(e) = &snap.expect {
        ports.push(e.tproxy_port);
    }
    ports.sort_unstable();
    ports.dedup();
    let Some(ls) = &snap.listeners else {
        if !ports.is_empty() {
            out.push(Finding::new(
                "listener",
                A,
                Severity::Info,
                "sockets could not be listed (sock_diag unavailable); listener not checked",
            ));
        }
        return;
    };
    let udp = snap.expect.as_ref().is_some_and(|e| e.udp);
    for port in ports {
        let mut kinds = vec![true];
        if udp {
            kinds.push(false);
        }
        for tcp in kinds {
            let proto = if tcp { "TCP" } else { "UDP" };
            let found: Vec<_> = ls
                .iter()
                .filter(|l| l.tcp == tcp && l.port == port)
                .collect();
            let f = if found.is_empty() {
                Finding::new("listener", A, Severity::Error, format!("nothing listens on {proto} port {port}"))
                    .why("TPROXY hands packets to a socket bound to that port; with none, intercepted connections are reset (TCP) or dropped (UDP)")
                    .fix("sudo tpgate run -c <config>   # or point the tproxy rule at the port your proxy listens on")
            } else if found.iter().any(|l| l.transparent == Some(true)) {
                Finding::new(
                    "listener",
                    A,
                    Severity::Ok,
                    format!("{proto} port {port}: listener with IP_TRANSPARENT"),
                )
            } else if found.iter().all(|l| l.transparent == Some(false)) {
                Finding::new("listener", A, Severity::Error, format!("{proto} port {port}: listener without IP_TRANSPARENT"))
                    .why("TPROXY only hands packets to transparent sockets; this one never receives intercepted traffic")
                    .fix("the proxy must set IP_TRANSPARENT (setsockopt SOL_IP 19) before bind; enable its tproxy mode (e.g. `tproxy-port:` in Clash/mihomo)")
            } else {
                Finding::new("listener", A, Severity::Info, format!("{proto} port {port}: listening; kernel does not report IP_TRANSPARENT (needs 5.10+)"))
            };
            out.push(f);
        }
    }
}

pub(super) fn neighbours(snap: &Snapshot, chains: &[Chain], out: &mut Vec<Finding>) {
    const A: Area = Area::Neighbours;
    let lan = snap
        .expect
        .as_ref()
        .map(|e| e.lan_interfaces.join(", "))
        .filter(|l| !l.is_empty());
    let gw_sev = if lan.is_some() {
        Severity::Warn
    } else {
        Severity::Info
    };
    let lan_name = lan.clone().unwrap_or_else(|| "<lan>".into());
    let has_chain = |pred: &dyn Fn(&Chain) -> bool| chains.iter().any(pred);
    if snap.neighbours.docker || has_chain(&|c| c.name == "DOCKER" || c.name == "DOCKER-USER") {
        let fwd_drop = snap
            .iptables
            .iter()
            .any(|d| d.text.contains("\n:FORWARD DROP"));
        let mut f = Finding::new("docker", A, Severity::Info, "Docker present")
            .why("Docker's bridges (docker0, br-*) are not intercepted unless listed in lan-interfaces; its rules live in filter/nat, not in the mangle hooks TPROXY uses");
        if fwd_drop && lan.is_some() {
            f = Finding::new("docker", A, Severity::Warn, "Docker set the iptables FORWARD policy to DROP")
                .why("LAN traffic that is forwarded rather than intercepted (bypassed destinations, ICMP) is dropped")
                .fix(format!("iptables -I DOCKER-USER -i {lan_name} -j ACCEPT"));
        }
        out.push(f);
    }
    let br = snap.neighbours.br_netfilter
        || snap
            .modules
            .as_ref()
            .is_some_and(|m| m.loaded.iter().any(|l| l == "br_netfilter"));
    if br {
        let on = snap
            .sysctls
            .get("net.bridge.bridge-nf-call-iptables")
            .is_some_and(|v| v.trim() == "1");
        let lan_bridge = snap.expect.as_ref().is_some_and(|e| {
            e.lan_interfaces
                .iter()
                .any(|i| snap.neighbours.bridges.contains(i))
        });
        out.push(Finding::new("br-netfilter", A, if on && lan_bridge { Severity::Warn } else { Severity::Info }, format!("br_netfilter loaded (bridge-nf-call-iptables = {})", if on { 1 } else { 0 }))
            .why("bridged frames between LAN ports pass the IP hooks too: traffic between two LAN hosts to a non-bypassed address is intercepted in PREROUTING")
            .fix("sysctl -w net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0   # unless Docker/k8s needs it; or add the LAN prefix to bypass"));
    }
    let firewalld_table = has_chain(&|c| c.origin == "nft inet firewalld");
    if snap.neighbours.firewalld_running || firewalld_table {
        out.push(Finding::new("firewalld", A, gw_sev, format!("firewalld running{}", if firewalld_table { " (nftables backend, table inet firewalld)" } else { "" }))
            .why("its reload replaces only its own table (nftables backend; the iptables backend flushes the iptables chains), but its input filter sees intercepted LAN packets with their original destination port and rejects them unless the LAN interface is trusted")
            .fix(format!("firewall-cmd --permanent --zone=trusted --add-interface={lan_name} && firewall-cmd --reload")));
    }
    if snap.neighbours.ufw_active || has_chain(&|c| c.name.starts_with("ufw-")) {
        out.push(Finding::new("ufw", A, gw_sev, "ufw active")
            .why("ufw's INPUT policy drops intercepted LAN packets (their destination port is the original one, not an allowed local port); `ufw reload` only rewrites ufw's own chains")
            .fix(format!("ufw allow in on {lan_name}")));
    }
    if has_chain(&|c| c.origin == "nft inet fw4") {
        out.push(Finding::new("fw4", A, Severity::Info, "OpenWrt fw4 (table inet fw4)")
            .why("`fw4 reload` replaces only table inet fw4, so tpgate's own table survives; the lan zone must accept input (its default) for intercepted packets to reach the proxy"));
    }
    if let Some(conf) = &snap.neighbours.nftables_conf {
        if conf
            .lines()
            .any(|l| l.trim_start().starts_with("flush ruleset"))
        {
            out.push(Finding::new("nftables-conf", A, Severity::Warn, "/etc/nftables.conf starts with `flush ruleset`")
                .why("`systemctl restart nftables` (or reload, or a boot-time ordering after tpgate) deletes every table, tpgate's and TPROXY rules included; interception stops until tpgate restarts")
                .fix("replace `flush ruleset` by one `table inet filter {}` + `flush table inet filter` pair per table the file defines"));
        }
    }
    let mixed = [Family::V4, Family::V6].into_iter().any(|f| {
        let has = |v: IptVariant| {
            snap.iptables.iter().any(|d| {
                d.family == f && d.variant == v && d.text.lines().any(|l| l.starts_with("-A "))
            })
        };
        has(IptVariant::Legacy) && has(IptVariant::Nft)
    });
    if mixed {
        out.push(Finding::new("iptables-mixed", A, Severity::Warn, "rules in both iptables-legacy and iptables-nft")
            .why("both sets run, in an order neither tool shows; a TPROXY rule in one and its exclusions in the other do not see each other")
            .fix("iptables-legacy-save > legacy.rules; move them to one variant (iptables-restore-translate / iptables-nft-restore) and flush the other"));
    }
}
