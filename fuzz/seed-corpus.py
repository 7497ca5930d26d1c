#!/usr/bin/env python3
"""Writes fuzz/corpus/TARGET/ seeds from the repository's fixtures and a few hand-built
protocol messages: valid inputs, so libFuzzer starts from the shapes the parsers accept
rather than from nothing. Small files only (at most 4 KiB each). Idempotent: run it again
after changing a fixture; it rewrites only its own seeds (named seed-*), never the inputs
the fuzzer or `cargo fuzz cmin` added.

    python3 fuzz/seed-corpus.py
"""
import hashlib
import hmac as hmac_mod
import ipaddress
import re
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
FIXTURES = ROOT / "crates" / "tpgate-core" / "tests" / "fixtures"
GOLDEN = ROOT / "crates" / "tpgate-core" / "tests" / "golden"
MAX = 4096

seeds = {}


def seed(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    if len(data) <= MAX:
        seeds.setdefault(target, {})[f"seed-{name}"] = data


def yaml_blocks(text):
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


# config: the golden sample configs, the embedded and packaged defaults, README examples.
readme = (ROOT / "README.md").read_text()
for f in sorted(GOLDEN.glob("*.yaml")):
    seed("config", f"golden-{f.stem}", f.read_text())
seed("config", "default", (ROOT / "crates/tpgate/src/default.yaml").read_text())
seed("config", "packaged", (ROOT / "packaging/config.yaml").read_text())
for i, block in enumerate(yaml_blocks(readme)):
    seed("config", f"readme-{i}", block)

# rule: every rule line of those configs, one per file.
rules = set()
for text in [readme] + [f.read_text() for f in GOLDEN.glob("*.yaml")]:
    rules.update(re.findall(r"^\s*- ([A-Z][A-Z0-9-]*,[^#\n]*?)\s*(?:#.*)?$", text, re.M))
for i, r in enumerate(sorted(rules)):
    seed("rule", f"{i:02}", r)

# ruleset: selector byte (behaviour = sel % 3: domain, ipcidr, classical; bit 2: text), file.
seed("ruleset", "domain-yaml", b"\x00payload:\n  - '+.example.com'\n  - '.ads.example'\n  - 'www.example.org'\n  - '*.cdn.example'\n")
seed("ruleset", "domain-text", b"\x0c+.example.com\n# comment\nexample.org\n*.x.example\n")
seed("ruleset", "ipcidr-yaml", b"\x01payload:\n  - 192.0.2.0/24\n  - '2001:db8::/32'\n")
seed("ruleset", "ipcidr-text", b"\x04198.51.100.0/24\n203.0.113.7/32\n")
seed("ruleset", "classical", b"\x02payload:\n  - DOMAIN-SUFFIX,example.com\n  - DST-PORT,1935\n  - IP-CIDR,192.0.2.0/24,no-resolve\n")


# SOCKS5 (RFC 1928): server replies and UDP datagram headers.
def socks_addr(host, port):
    try:
        ip = ipaddress.ip_address(host)
        kind = 1 if ip.version == 4 else 4
        return bytes([kind]) + ip.packed + struct.pack(">H", port)
    except ValueError:
        return bytes([3, len(host)]) + host.encode() + struct.pack(">H", port)


seed("socks5", "method-none", b"\x05\x00")
seed("socks5", "method-userpass", b"\x05\x02")
seed("socks5", "auth-ok", b"\x01\x00")
seed("socks5", "reply-v4", b"\x05\x00\x00" + socks_addr("192.0.2.1", 1080))
seed("socks5", "reply-v6", b"\x05\x00\x00" + socks_addr("2001:db8::1", 1080))
seed("socks5", "reply-name", b"\x05\x00\x00" + socks_addr("proxy.example", 443) + b"tunnel")
seed("socks5", "reply-refused", b"\x05\x05\x00" + socks_addr("0.0.0.0", 0))
seed("socks5", "udp-v4", b"\x00\x00\x00" + socks_addr("203.0.113.2", 53) + b"payload")
seed("socks5", "udp-name", b"\x00\x00\x00" + socks_addr("dns.example", 53) + b"q")

# HTTP CONNECT responses.
seed("http_connect", "200", b"HTTP/1.1 200 Connection established\r\n\r\n")
seed("http_connect", "200-headers-data", b"HTTP/1.1 200 OK\r\nVia: 1.1 proxy\r\nContent-Length: 0\r\n\r\nSSH-2.0-server\r\n")
seed("http_connect", "407", b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n")
seed("http_connect", "http10", b"HTTP/1.0 200 Connection established\r\n\r\n")


# Trojan UDP framing: address, length, CRLF, payload; several packets in a row.
def trojan(host, port, payload):
    return socks_addr(host, port) + struct.pack(">H", len(payload)) + b"\r\n" + payload


seed("trojan", "one-v4", trojan("203.0.113.2", 53, b"query"))
seed("trojan", "three", trojan("2001:db8::2", 443, b"quic") + trojan("dns.example", 53, b"") + trojan("192.0.2.9", 9, b"x" * 40))
seed("trojan", "partial", trojan("203.0.113.2", 53, b"query")[:9])

# Sniffers: the captured clients (fixtures/README.md says which is which).
for f in sorted(FIXTURES.glob("*.bin")):
    target = "sniff_quic" if f.name.startswith("quic") else "sniff_http" if "http" in f.name else "sniff_tls"
    seed(target, f.stem, f.read_bytes())
for f in sorted(FIXTURES.glob("*.hex")):
    packet = bytes.fromhex("".join(f.read_text().split()))
    seed("sniff_quic", f.stem, struct.pack(">H", len(packet)) + packet)
seed("sniff_http", "get", b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nAccept: */*\r\n\r\n")
seed("sniff_http", "host-port-v6", b"POST / HTTP/1.1\r\nHOST: [2001:db8::1]:8080\r\n\r\nbody")
seed("sniff_http", "partial", b"GET / HTTP/1.1\r\nUser-Agent: x\r\nHo")

# dns_fakeip: allocation steps, and a saved table as the daemon writes it.
seed("dns_fakeip", "steps", bytes(range(64)))
seed("dns_fakeip", "snapshot", b'[["a.example","198.18.0.2"],["b.example","198.18.0.3"],["v6.example","fdfe:dcba:9876::2"]]')
seed("dns_fakeip", "snapshot-bad", b'[["a.example","not an ip"],["b.example"],7,{"x":1}]')


# DNS messages (RFC 1035), built by hand.
def name(n):
    out = b""
    for label in n.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


TYPES = {"A": 1, "NS": 2, "SOA": 6, "MX": 15, "AAAA": 28, "OPT": 41, "HTTPS": 65}


def header(ident, flags, qd, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", ident, flags, qd, an, ns, ar)


def question(n, t):
    return name(n) + struct.pack(">HH", TYPES[t], 1)


def opt(payload=1232):
    return b"\x00" + struct.pack(">HHIH", TYPES["OPT"], payload, 0, 0)


def rr(n, t, ttl, rdata):
    return name(n) + struct.pack(">HHIH", TYPES[t], 1, ttl, len(rdata)) + rdata


def query(n, t, ident=0x1234, edns=False):
    return header(ident, 0x0100, 1, ar=1 if edns else 0) + question(n, t) + (opt() if edns else b"")


# dns_request: mode byte (bit 0: a TCP stream of frames; bit 1: ipv6; the rest: the fake
# upstream's behaviour), chunk size, then the bytes.
for i, (n, t) in enumerate([("www.example.com", "A"), ("www.example.com", "AAAA"), ("router.home", "A"), ("printer.lan", "A"), ("svc.example", "HTTPS")]):
    seed("dns_request", f"udp-{i}", bytes([0x04 * (i + 1), 0]) + query(n, t, edns=i % 2 == 1))
frames = b"".join(struct.pack(">H", len(q)) + q for q in [query("a.example", "A"), query("b.example", "MX", 7)])
seed("dns_request", "tcp-two-frames", b"\x07\x05" + frames)


# dns_reply: selector byte (type, UDP/TCP, cache age), then what the upstream sent back.
def reply(n, t, rcode=0, answers=(), authority=(), tc=False, ident=0x4321):
    flags = 0x8180 | rcode | (0x0200 if tc else 0)
    return header(ident, flags, 1, len(answers), len(authority)) + question(n, t) + b"".join(answers) + b"".join(authority)


W = "www.example.com"
soa = rr("example.com", "SOA", 300, name("ns.example.com") + name("admin.example.com") + struct.pack(">IIIII", 1, 7200, 900, 86400, 60))
seed("dns_reply", "a", b"\x00" + reply(W, "A", answers=[rr(W, "A", 300, bytes([203, 0, 113, 2])), rr(W, "A", 30, bytes([203, 0, 113, 3]))]))
seed("dns_reply", "aaaa", b"\x09" + reply(W, "AAAA", answers=[rr(W, "AAAA", 60, ipaddress.ip_address("2001:db8::2").packed)]))
seed("dns_reply", "mx", b"\x06" + reply(W, "MX", answers=[rr(W, "MX", 60, b"\x00\x0a" + name("mail.example.com"))]))
seed("dns_reply", "nxdomain", b"\x10" + reply(W, "A", rcode=3, authority=[soa]))
seed("dns_reply", "servfail", b"\x00" + reply(W, "A", rcode=2))
seed("dns_reply", "truncated", b"\x00" + reply(W, "A", tc=True))
seed("dns_reply", "other-question", b"\x00" + reply("victim.example", "A", answers=[rr("victim.example", "A", 3600, bytes([192, 0, 2, 66]))]))
seed("dns_reply", "cut-short", b"\x04" + reply(W, "A", answers=[rr(W, "A", 300, bytes([203, 0, 113, 2]))])[:30])
seed("dns_reply", "garbage", b"\x00" + bytes(range(7, 80)))


# geosite: a v2ray GeoSiteList in protobuf, built by hand; selector byte 0x1f asks every name.
def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(tag, data):
    if isinstance(data, int):
        return varint(tag << 3) + varint(data)
    if isinstance(data, str):
        data = data.encode()
    return varint(tag << 3 | 2) + varint(len(data)) + data


def domain(kind, value, attrs=()):
    return field(1, kind) + field(2, value) + b"".join(field(3, field(1, a)) for a in attrs)


def site(code, domains):
    return field(1, code) + b"".join(field(2, d) for d in domains)


sites = [
    site("CN", [domain(2, "example.cn"), domain(3, "www.example.cn", ["ads"]), domain(0, "cn")]),
    site("google", [domain(0, "google"), domain(1, r"^g[a-z]*\.example$")]),
    site("private", [domain(2, "lan"), domain(3, "localhost")]),
]
seed("geosite", "three-lists", b"\x1f" + b"".join(field(1, s) for s in sites))
seed("geosite", "one-list", b"\x01" + field(1, sites[0]))
seed("geosite", "empty", b"\x00")

# gun (gRPC transport): what a server sends back in the response body, messages in a row.
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n == 0:
            return out + bytes([b])
        out += bytes([b | 0x80])


def gun(*pieces, extra=b""):
    body = b"".join(b"\x0a" + varint(len(p)) + p for p in pieces) + extra
    return b"\x00" + struct.pack(">I", len(body)) + body


seed("gun", "one", gun(b"\x00\x00hello"))
seed("gun", "three", gun(b"a") + gun(b"x" * 300) + gun())
seed("gun", "multi-hunk", gun(b"ab", b"cd", extra=b"\x10\x05"))
seed("gun", "partial", gun(b"hello")[:8])

# hysteria2: byte 0 even -> a TCPResponse; odd -> UDPMessages separated by 0xff.
def hy2_udp(session, packet, frag, frags, addr, payload):
    return struct.pack(">IHBB", session, packet, frag, frags) + varint(len(addr)) + addr + payload

seed("hysteria2", "response-ok", b"\x00" + b"\x00\x02ok\x03xyz" + b"data")
seed("hysteria2", "response-refused", b"\x00" + b"\x01\x07refused\x00")
seed("hysteria2", "udp-one", b"\x01" + hy2_udp(7, 1, 0, 1, b"198.51.100.1:53", b"query"))
seed("hysteria2", "udp-fragments", b"\x01" + hy2_udp(7, 2, 1, 2, b"[2001:db8::1]:53", b"tail")
     + b"\xff" + hy2_udp(7, 2, 0, 2, b"[2001:db8::1]:53", b"head"))

# tuic: Packet commands back to back, as on a stream.
def tuic_packet(assoc, pkt, total, frag, addr, payload):
    return bytes([5, 2]) + struct.pack(">HHBBH", assoc, pkt, total, frag, len(payload)) + addr + payload

TUIC_V4 = bytes([1, 198, 51, 100, 1, 0, 53])
seed("tuic", "one", tuic_packet(1, 1, 1, 0, TUIC_V4, b"reply"))
seed("tuic", "fragments", tuic_packet(1, 2, 2, 0, bytes([0, 9]) + b"a.example" + b"\x00\x35", b"head")
     + tuic_packet(1, 2, 2, 1, b"\xff", b"tail"))

# ws_upgrade: the server's answer to a WebSocket or HTTP upgrade, and what followed it.
seed("ws_upgrade", "websocket", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
     "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x82\x02hi")
seed("ws_upgrade", "http-upgrade", "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
     "Upgrade: websocket\r\n\r\n\x00\x00")
seed("ws_upgrade", "not-found", "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

# ss_plugins: a plugin server's answer; the first byte picks the parser (0 simple-obfs TLS,
# 1 ShadowTLS v2 records, 2 Mux.Cool frames).
def record(kind, body):
    return bytes([kind, 3, 3]) + struct.pack(">H", len(body)) + body


server_hello = record(0x16, b"\x02" + bytes(90))
seed("ss_plugins", "obfs-tls", b"\x00" + server_hello + record(0x14, b"\x01")
     + record(0x16, b"first") + record(0x17, b"second"))
seed("ss_plugins", "obfs-tls-alert", b"\x00" + record(0x15, b"\x02\x28"))
seed("ss_plugins", "shadow-tls", b"\x01" + record(0x17, b"data") + record(0x17, b"more"))
seed("ss_plugins", "mux-cool", b"\x02" + bytes([0, 4, 0, 0, 2, 1, 0, 2]) + b"hi"
     + bytes([0, 4, 0, 0, 4, 0]) + bytes([0, 4, 0, 0, 3, 0]))

# ShadowTLS v3 data records as the server signs them (password "pw", server random all 3s
# as the target derives it from the first byte).
def v3_records(pieces):
    sr = bytes([3] * 32)
    chain = sr + b"S"
    out = b""
    for p in pieces:
        chain += p
        tag = hmac_mod.new(b"pw", chain, hashlib.sha1).digest()[:4]
        chain += tag
        out += record(0x17, tag + p)
    return out


seed("ss_plugins", "shadow-tls-v3", b"\x03" + v3_records([b"reply", b"more"]) + record(0x15, b"\x01\x00"))

# vision: selector byte (bit 0: the user id goes in front; the rest: piece size), then what
# an XTLS Vision server sends after its response header: padded frames, then plain bytes.
def vision_frame(command, content, padding):
    return bytes([command]) + struct.pack(">HH", len(content), padding) + content + b"\x00" * padding


seed("vision", "direct", b"\x01" + vision_frame(0, b"\x16\x03\x03\x00\x7a\x02", 30)
     + vision_frame(2, b"\x17\x03\x03\x00\x10", 5))
seed("vision", "end-then-plain", b"\x21" + vision_frame(1, b"SSH-2.0-x\r\n", 200) + b"more")
seed("vision", "not-padded", b"\x00HTTP/1.1 200 OK\r\n\r\n")

# xudp: Mux.Cool frames of session 0 from the server: keep frames with and without an
# address, a keep-alive, an end.
def xudp(status, option, meta_rest=b"", data=None):
    meta = b"\x00\x00" + bytes([status, option]) + meta_rest
    out = struct.pack(">H", len(meta)) + meta
    if data is not None:
        out += struct.pack(">H", len(data)) + data
    return out


seed("xudp", "keep", xudp(2, 1, data=b"hello"))
seed("xudp", "keep-v4", xudp(2, 1, b"\x02\x00\x35\x01\xc0\x00\x02\x01", b"reply") + xudp(4, 0))
seed("xudp", "end", xudp(2, 1, data=b"x") + xudp(3, 0))

# reality: a 32-byte auth key, then what the server shows: a certificate shaped as
# REALITY's (an Ed25519 key, the HMAC-SHA512 of that key as the signature), or a
# ClientHello record with a 32-byte session id.

REALITY_AUTH = bytes(range(32))
ED_KEY = bytes([7] * 32)
ED_SPKI = bytes.fromhex("302a300506032b6570032100")
reality_sig = hmac_mod.new(REALITY_AUTH, ED_KEY, hashlib.sha512).digest()
reality_cert = (bytes.fromhex("308201003081a0020100") + ED_SPKI + ED_KEY
                + bytes.fromhex("300506032b6570") + b"\x03\x41\x00" + reality_sig)
seed("reality", "cert", REALITY_AUTH + reality_cert)
seed("reality", "cert-other-key", bytes(32) + reality_cert)
hello_body = b"\x03\x03" + bytes(range(32)) + b"\x20" + bytes(32) + b"\x00\x02\x13\x01\x01\x00"
hello_hs = b"\x01" + struct.pack(">I", len(hello_body))[1:] + hello_body
seed("reality", "hello", REALITY_AUTH + b"\x16\x03\x01" + struct.pack(">H", len(hello_hs)) + hello_hs)

for target, files in sorted(seeds.items()):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    for fname, data in sorted(files.items()):
        (d / fname).write_bytes(data)
    print(f"{target}: {len(files)} seeds")
