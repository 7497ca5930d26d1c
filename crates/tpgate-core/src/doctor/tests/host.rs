//! Kernel, sysctl, listener and neighbour checks.

use super::rules::{iptables_only, CLASH_GUIDE};
use super::*;

fn set(s: &mut Snapshot, k: &str, v: &str) {
    s.sysctls.insert(k.to_owned(), v.to_owned());
}

#[test]
fn ip_forward_off_with_lan() {
    let mut s = healthy();
    set(&mut s, "net.ipv4.ip_forward", "0");
    set(&mut s, "net.ipv6.conf.all.forwarding", "0");
    let fs = diagnose(&s);
    assert_eq!(worst(&fs, "ip-forward"), Severity::Error);
    assert!(with_id(&fs, "ip-forward")[0]
        .fix
        .starts_with("sysctl -w net.ipv4.ip_forward=1"));
    assert_eq!(worst(&fs, "ipv6-forwarding"), Severity::Warn);
    // Without LAN interfaces forwarding is not needed.
    s.expect = Some(Expect {
        lan_interfaces: vec![],
        ..expect()
    });
    assert!(with_id(&diagnose(&s), "ip-forward").is_empty());
}

#[test]
fn strict_rp_filter_is_the_max_of_all_and_iface() {
    let mut s = healthy();
    set(&mut s, "net.ipv4.conf.all.rp_filter", "1");
    set(&mut s, "net.ipv4.conf.br-lan.rp_filter", "0");
    let fs = diagnose(&s);
    let f = with_id(&fs, "rp-filter");
    assert_eq!(f[0].severity, Severity::Warn);
    assert_eq!(f[0].fix, "sysctl -w net.ipv4.conf.all.rp_filter=2");
    set(&mut s, "net.ipv4.conf.all.rp_filter", "0");
    set(&mut s, "net.ipv4.conf.br-lan.rp_filter", "1");
    let fs = diagnose(&s);
    assert_eq!(
        with_id(&fs, "rp-filter")[0].fix,
        "sysctl -w net.ipv4.conf.br-lan.rp_filter=2"
    );
    set(&mut s, "net.ipv4.conf.br-lan.rp_filter", "2");
    assert_eq!(worst(&diagnose(&s), "rp-filter"), Severity::Ok);
}

#[test]
fn src_valid_mark_with_rp_filter() {
    let mut s = healthy();
    set(&mut s, "net.ipv4.conf.all.src_valid_mark", "1");
    assert_eq!(worst(&diagnose(&s), "src-valid-mark"), Severity::Error);
    set(&mut s, "net.ipv4.conf.br-lan.rp_filter", "0");
    assert!(with_id(&diagnose(&s), "src-valid-mark").is_empty());
}

#[test]
fn listener_missing_or_not_transparent() {
    let mut s = healthy();
    s.listeners = Some(vec![]);
    let fs = diagnose(&s);
    assert_eq!(with_id(&fs, "listener").len(), 2, "TCP and UDP");
    assert_eq!(worst(&fs, "listener"), Severity::Error);
    s.listeners = Some(vec![
        Listener {
            tcp: true,
            v6: false,
            port: 7893,
            transparent: Some(false),
        },
        Listener {
            tcp: false,
            v6: false,
            port: 7893,
            transparent: Some(true),
        },
    ]);
    let fs = diagnose(&s);
    assert!(with_id(&fs, "listener")
        .iter()
        .any(|f| f.severity == Severity::Error
            && f.title
                .contains("TCP port 7893: listener without IP_TRANSPARENT")));
    // Without a config the port comes from the TPROXY rule.
    let mut s = iptables_only(CLASH_GUIDE);
    s.listeners = Some(vec![]);
    assert!(with_id(&diagnose(&s), "listener")
        .iter()
        .any(|f| f.title == "nothing listens on TCP port 7893"));
}

#[test]
fn kernel_modules() {
    let mut s = healthy();
    s.nft_json = None;
    s.modules = Some(Modules {
        loaded: vec![],
        builtin: Some(vec![]),
        available: Some(vec![]),
    });
    let fs = diagnose(&s);
    assert!(with_id(&fs, "kernel-tproxy")
        .iter()
        .any(|f| f.severity == Severity::Error && f.title.starts_with("nft_tproxy missing")));
    assert!(with_id(&fs, "kernel-socket")
        .iter()
        .any(|f| f.severity == Severity::Info && f.title.starts_with("xt_socket missing")));
    s.modules = Some(Modules {
        loaded: vec![],
        builtin: None,
        available: None,
    });
    assert_eq!(worst(&diagnose(&s), "kernel-tproxy"), Severity::Info);
    s.modules = Some(Modules {
        loaded: vec![],
        builtin: Some(vec!["nft_tproxy".into()]),
        available: Some(vec![]),
    });
    assert!(with_id(&diagnose(&s), "kernel-tproxy")
        .iter()
        .any(|f| f.title == "nft_tproxy built in (nftables `tproxy` statement)"));
}

#[test]
fn old_kernel_has_no_owner_flag() {
    let mut s = healthy();
    s.kernel_release = Some("5.10.0-28-amd64".into());
    assert_eq!(worst(&diagnose(&s), "kernel-owner-flag"), Severity::Warn);
    s.kernel_release = Some("5.12.0".into());
    assert_eq!(worst(&diagnose(&s), "kernel-owner-flag"), Severity::Ok);
}

#[test]
fn no_policy_routing_or_ipv6() {
    let mut s = healthy();
    s.rules = None;
    s.ipv6 = false;
    let fs = diagnose(&s);
    assert_eq!(worst(&fs, "kernel-policy-routing"), Severity::Warn);
    assert_eq!(worst(&fs, "kernel-ipv6"), Severity::Warn);
}

#[test]
fn neighbours_firewalld_fw4_docker_ufw() {
    let mut s = healthy();
    s.nft_json = Some(NEIGHBOURS.to_owned());
    s.neighbours.firewalld_running = true;
    s.iptables = vec![IptablesDump {
        family: Family::V4,
        variant: IptVariant::Nft,
        text: "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n:ufw-user-input - [0:0]\n-A FORWARD -j DOCKER-USER\nCOMMIT\n".into(),
    }];
    let fs = diagnose(&s);
    let fw = with_id(&fs, "firewalld");
    assert!(fw[0].title.contains("table inet firewalld") && fw[0].severity == Severity::Warn);
    assert_eq!(
        fw[0].fix,
        "firewall-cmd --permanent --zone=trusted --add-interface=br-lan && firewall-cmd --reload"
    );
    assert_eq!(worst(&fs, "fw4"), Severity::Info);
    assert_eq!(
        with_id(&fs, "docker")[0].fix,
        "iptables -I DOCKER-USER -i br-lan -j ACCEPT"
    );
    assert_eq!(with_id(&fs, "ufw")[0].fix, "ufw allow in on br-lan");
}

#[test]
fn flush_ruleset_and_mixed_iptables() {
    let mut s = healthy();
    s.neighbours.nftables_conf =
        Some("#!/usr/sbin/nft -f\n\nflush ruleset\n\ntable inet filter {\n}\n".into());
    s.neighbours.br_netfilter = true;
    s.neighbours.bridges = vec!["br-lan".into()];
    set(&mut s, "net.bridge.bridge-nf-call-iptables", "1");
    s.iptables = vec![
        IptablesDump {
            family: Family::V4,
            variant: IptVariant::Nft,
            text: CLASH_GUIDE.into(),
        },
        IptablesDump {
            family: Family::V4,
            variant: IptVariant::Legacy,
            text: "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n".into(),
        },
    ];
    let fs = diagnose(&s);
    assert_eq!(worst(&fs, "nftables-conf"), Severity::Warn);
    assert_eq!(worst(&fs, "iptables-mixed"), Severity::Warn);
    assert_eq!(worst(&fs, "br-netfilter"), Severity::Warn);
}

#[test]
fn modules_in_use_by_live_rules_are_present() {
    // A kernel without /proc/modules: what the live ruleset uses is there anyway.
    let mut s = iptables_only(CLASH_GUIDE);
    s.modules = None;
    let fs = diagnose(&s);
    assert!(with_id(&fs, "kernel-tproxy")
        .iter()
        .any(|f| f.severity == Severity::Ok && f.title.starts_with("xt_TPROXY in use")));
    assert!(with_id(&fs, "kernel-tproxy")
        .iter()
        .any(|f| f.severity == Severity::Info && f.title.starts_with("nft_tproxy")));
}

#[test]
fn offload_without_masquerade_is_a_warning() {
    let mut s = healthy();
    s.expect = Some(Expect {
        offload: true,
        ..expect()
    });
    let fs = diagnose(&s);
    let f = with_id(&fs, "offload-masquerade");
    if s.nft_json
        .as_deref()
        .is_some_and(|j| j.contains("masquerade"))
    {
        assert_eq!(f[0].severity, Severity::Ok);
    } else {
        assert_eq!(f[0].severity, Severity::Warn);
        assert!(f[0].fix.contains("masquerade"), "{}", f[0].fix);
    }
    // A masquerade rule in an iptables nat table satisfies it.
    s.nft_json = None;
    s.iptables.push(IptablesDump {
        family: Family::V4,
        variant: IptVariant::Nft,
        text: "*nat\n-A POSTROUTING -o wan0 -j MASQUERADE\nCOMMIT\n".into(),
    });
    assert_eq!(worst(&diagnose(&s), "offload-masquerade"), Severity::Ok);
    // Without offloaded ranges there is nothing to say.
    s.expect = Some(expect());
    assert!(with_id(&diagnose(&s), "offload-masquerade").is_empty());
}
