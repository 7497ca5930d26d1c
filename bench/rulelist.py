#!/usr/bin/env python3
"""The rule-list case's configs (bench/run.sh): one mihomo-style list written for each proxy
that can run it, so all of them decide by the same logic.

Usage: rulelist.py DIR   writes into DIR:
  tpgate-rules.yaml   the list as tpgate rules (the address part as an ipcidr rule provider)
  cn.txt              that provider's prefixes, one a line
  sing-box-rules.json a tproxy inbound and route rules (sniff, domain, ip_cidr, final)
  v2ray-rules.json    dokodemo-door with sniffing and routing rules
  upstream.json       sing-box as the SOCKS5 upstream on the second WAN host, which resolves
                      the web host's name itself (tpgate and v2ray hand it the sniffed name)

The list, as real ones are: 300 domain rules first (200 DOMAIN-SUFFIX, 100 DOMAIN-KEYWORD,
alternately to the upstream and REJECT) that the bench traffic never hits, then 500 address
prefixes to DIRECT (a GEOIP,CN-like set: the server's 203.0.113.0/24 and 499 others), then
MATCH to the upstream. Bulk traffic goes to 203.0.113.2 (DIRECT by address); HTTP goes to
192.0.2.2, which no prefix covers, with a Host name no domain rule matches (MATCH).
"""

import json
import sys

LAN_IFACE = "lan0"
UPSTREAM = ("198.18.0.2", 1080)
WEB_NAME = "www.bench-upstream.test"
WEB_ADDR = "192.0.2.2"
MARK = 255

SUFFIXES = [f"site{i}.example" for i in range(200)]
KEYWORDS = [f"tracker{i}" for i in range(100)]
PREFIXES = ["203.0.113.0/24"] + [f"{1 + i // 250}.{i % 250}.0.0/16" for i in range(499)]


def to_upstream(i):
    """Every other domain rule sends to the upstream, the rest are REJECT."""
    return i % 2 == 1


def tpgate(d):
    rules = [f"  - DOMAIN-SUFFIX,{s},{'upstream' if to_upstream(i) else 'REJECT'}"
             for i, s in enumerate(SUFFIXES)]
    rules += [f"  - DOMAIN-KEYWORD,{k},{'upstream' if to_upstream(i) else 'REJECT'}"
              for i, k in enumerate(KEYWORDS)]
    with open(f"{d}/cn.txt", "w") as f:
        f.write("\n".join(PREFIXES) + "\n")
    with open(f"{d}/tpgate-rules.yaml", "w") as f:
        f.write(f"""tproxy-port: 7893
routing-mark: {MARK}
ipv6: false
log-level: warning
intercept:
  lan-interfaces: [{LAN_IFACE}]
  local: false
  udp: true
  offload-direct: true
# The sniffer as shipped (HTTP Host on 80 and 8080-8880, TLS SNI on 443 and 8443).
sniffer:
  enable: true
limits:
  max-connections: 1000000
  per-source: 1000000
proxies:
  - {{name: upstream, type: socks5, server: {UPSTREAM[0]}, port: {UPSTREAM[1]}}}
rule-providers:
  cn: {{type: file, behavior: ipcidr, format: text, path: {d}/cn.txt}}
rules:
""" + "\n".join(rules) + """
  - RULE-SET,cn,DIRECT
  - MATCH,upstream
""")


def sing_box(d):
    up = [s for i, s in enumerate(SUFFIXES) if to_upstream(i)]
    rej = [s for i, s in enumerate(SUFFIXES) if not to_upstream(i)]
    kup = [k for i, k in enumerate(KEYWORDS) if to_upstream(i)]
    krej = [k for i, k in enumerate(KEYWORDS) if not to_upstream(i)]
    cfg = {
        "log": {"level": "warn"},
        "inbounds": [{"type": "tproxy", "tag": "tproxy-in", "listen": "0.0.0.0",
                      "listen_port": 7893}],
        "outbounds": [
            {"type": "direct", "tag": "direct", "routing_mark": MARK},
            {"type": "socks", "tag": "upstream", "server": UPSTREAM[0],
             "server_port": UPSTREAM[1], "version": "5", "routing_mark": MARK},
        ],
        "route": {
            "rules": [
                # Sniff where tpgate's sniffer looks, with its 200 ms timeout.
                {"port": [80, 443, 8443], "port_range": ["8080:8880"], "action": "sniff",
                 "sniffer": ["http", "tls"], "timeout": "200ms"},
                {"domain_suffix": up, "outbound": "upstream"},
                {"domain_suffix": rej, "action": "reject"},
                {"domain_keyword": kup, "outbound": "upstream"},
                {"domain_keyword": krej, "action": "reject"},
                {"ip_cidr": PREFIXES, "outbound": "direct"},
            ],
            "final": "upstream",
        },
    }
    with open(f"{d}/sing-box-rules.json", "w") as f:
        json.dump(cfg, f, indent=1)


def v2ray(d):
    up = [f"domain:{s}" for i, s in enumerate(SUFFIXES) if to_upstream(i)]
    up += [f"keyword:{k}" for i, k in enumerate(KEYWORDS) if to_upstream(i)]
    rej = [f"domain:{s}" for i, s in enumerate(SUFFIXES) if not to_upstream(i)]
    rej += [f"keyword:{k}" for i, k in enumerate(KEYWORDS) if not to_upstream(i)]
    sockopt = {"sockopt": {"mark": MARK}}
    cfg = {
        "log": {"loglevel": "warning", "access": "none"},
        "inbounds": [{
            "listen": "0.0.0.0", "port": 7893, "protocol": "dokodemo-door",
            "settings": {"network": "tcp,udp", "followRedirect": True},
            "streamSettings": {"sockopt": {"tproxy": "tproxy"}},
            # v2ray 4.34 sniffs every port and puts the name in the destination.
            "sniffing": {"enabled": True, "destOverride": ["http", "tls"]},
        }],
        "outbounds": [
            {"tag": "direct", "protocol": "freedom", "settings": {"domainStrategy": "AsIs"},
             "streamSettings": sockopt},
            {"tag": "upstream", "protocol": "socks",
             "settings": {"servers": [{"address": UPSTREAM[0], "port": UPSTREAM[1]}]},
             "streamSettings": sockopt},
            {"tag": "reject", "protocol": "blackhole"},
        ],
        "routing": {"domainStrategy": "AsIs", "rules": [
            {"type": "field", "domain": up, "outboundTag": "upstream"},
            {"type": "field", "domain": rej, "outboundTag": "reject"},
            {"type": "field", "ip": PREFIXES, "outboundTag": "direct"},
            {"type": "field", "network": "tcp,udp", "outboundTag": "upstream"},
        ]},
    }
    with open(f"{d}/v2ray-rules.json", "w") as f:
        json.dump(cfg, f, indent=1)


def upstream(d):
    cfg = {
        "log": {"level": "warn"},
        "dns": {"servers": [{"type": "hosts", "tag": "hosts",
                             "predefined": {WEB_NAME: WEB_ADDR}}]},
        "inbounds": [{"type": "socks", "tag": "socks-in", "listen": UPSTREAM[0],
                      "listen_port": UPSTREAM[1]}],
        "outbounds": [{"type": "direct", "tag": "direct"}],
        "route": {"final": "direct", "default_domain_resolver": "hosts"},
    }
    with open(f"{d}/upstream.json", "w") as f:
        json.dump(cfg, f, indent=1)


def main():
    d = sys.argv[1]
    tpgate(d)
    sing_box(d)
    v2ray(d)
    upstream(d)


if __name__ == "__main__":
    main()
