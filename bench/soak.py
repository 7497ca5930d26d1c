#!/usr/bin/env python3
"""Load loops for bench/soak.sh, each bounded by a deadline; the last line of stdout is a
JSON summary: {"ok", "failed", "bytes", "errors" (the first few), "names" (DNS: distinct
names asked)}. Every request is checked: an HTTP status other than 200, a wrong or missing
UDP echo, a DNS answer outside the fake-ip range, a time-out: each counts as a failure.

  soak.py http DEADLINE RATE URL...          GET with Connection: close, URLs in turn
  soak.py udp DEADLINE RATE SOCKETS HOST PORT   request/response over SOCKETS fixed sockets
  soak.py stream DEADLINE RATE HOST PORT      one socket, RATE datagrams/s, echoes counted
  soak.py dns DEADLINE RATE SERVER PREFIX N    A queries for PREFIX0..N-1.soak.test, then
                                                 a GET to the fake address each one got
  soak.py echo DEADLINE 0 PORT                   the UDP echo server ([::]:PORT, both families)
  soak.py report WORK CONFIG_JSON                the summary table and the checks (exit 1 on
                                                 a failed check, naming it)
"""

import http.client
import ipaddress
import json
import os
import socket
import struct
import sys
import threading
import time

TIMEOUT = 3.0
FAKE = ipaddress.ip_network("198.18.0.0/16")


class Tally:
    def __init__(self):
        self.ok = 0
        self.failed = 0
        self.bytes = 0
        self.errors = []
        self.names = set()

    def fail(self, what):
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append("%s %s" % (time.strftime("%H:%M:%S"), what))

    def dump(self):
        print(json.dumps({"ok": self.ok, "failed": self.failed, "bytes": self.bytes,
                          "errors": self.errors, "names": len(self.names)}), flush=True)


def paced(deadline, rate):
    """Yields 0, 1, 2, ... at RATE per second until DEADLINE (no catching up after a stall)."""
    step = 1.0 / rate
    nxt = time.monotonic()
    i = 0
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        if nxt > now:
            time.sleep(min(nxt - now, deadline - now))
            if time.monotonic() >= deadline:
                return
        nxt = max(nxt + step, time.monotonic() - step)
        yield i
        i += 1


def get(t, host, port, path="/", host_header=None):
    c = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        c.request("GET", path, headers={"Connection": "close", "Host": host_header or host})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            t.fail("GET http://%s:%s%s: status %d" % (host, port, path, r.status))
        else:
            t.ok += 1
            t.bytes += len(body)
    except OSError as e:
        t.fail("GET http://%s:%s%s: %s" % (host, port, path, e))
    finally:
        c.close()


def split_url(url):
    # http://HOST:PORT/ or http://[V6]:PORT/
    rest = url.split("://", 1)[1].rstrip("/")
    host, port = rest.rsplit(":", 1)
    return host.strip("[]"), int(port)


def run_http(deadline, rate, urls):
    t = Tally()
    targets = [split_url(u) for u in urls]
    for i in paced(deadline, rate):
        host, port = targets[i % len(targets)]
        get(t, host, port)
    return t


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def run_udp(deadline, rate, nsocks, host, port):
    t = Tally()
    socks = []
    for _ in range(nsocks):
        s = socket.socket(family(host), socket.SOCK_DGRAM)
        s.settimeout(TIMEOUT)
        s.connect((host, port))
        socks.append(s)
    for i in paced(deadline, rate):
        s = socks[i % nsocks]
        msg = b"req %d %s" % (i, os.urandom(8).hex().encode())
        try:
            s.send(msg)
            while True:  # a late echo of an earlier (failed) request is skipped
                got = s.recv(2048)
                if got == msg:
                    t.ok += 1
                    t.bytes += len(got)
                    break
                if not got.startswith(b"req "):
                    t.fail("udp %s:%d: wrong echo" % (host, port))
                    break
        except OSError as e:
            t.fail("udp %s:%d socket %d: %s" % (host, port, i % nsocks, e))
    return t


def run_stream(deadline, rate, host, port):
    t = Tally()
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.connect((host, port))
    s.settimeout(0.5)
    seen = set()
    stop = threading.Event()

    def receive():
        while not stop.is_set():
            try:
                got = s.recv(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            if len(got) >= 8:
                seen.add(struct.unpack("!Q", got[:8])[0])
                t.bytes += len(got)

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    pad = os.urandom(504)
    sent = 0
    for i in paced(deadline, rate):
        try:
            s.send(struct.pack("!Q", i) + pad)
            sent += 1
        except OSError as e:
            t.fail("stream send: %s" % e)
    time.sleep(TIMEOUT)
    stop.set()
    rx.join()
    t.ok = len(seen)
    lost = sent - len(seen)
    for _ in range(lost):
        t.fail("stream %s:%d: %d of %d datagrams not echoed" % (host, port, lost, sent))
    return t


def dns_query(server, name, qid):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack("!HH", 1, 1)
    s = socket.socket(family(server), socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    try:
        s.sendto(q, (server, 53))
        while True:
            r, _ = s.recvfrom(4096)
            if len(r) >= 12 and struct.unpack("!H", r[:2])[0] == qid:
                break
    finally:
        s.close()
    rcode = r[3] & 0xF
    ancount = struct.unpack("!H", r[6:8])[0]
    if rcode != 0 or ancount == 0:
        raise ValueError("rcode %d, %d answers" % (rcode, ancount))
    # Skip the question, then read answers until an A record.
    off = len(q)
    for _ in range(ancount):
        if r[off] & 0xC0 == 0xC0:
            off += 2
        else:
            while r[off]:
                off += r[off] + 1
            off += 1
        rtype, _, _, rdlen = struct.unpack("!HHIH", r[off:off + 10])
        off += 10
        if rtype == 1 and rdlen == 4:
            return socket.inet_ntoa(r[off:off + 4])
        off += rdlen
    raise ValueError("no A record")


def run_dns(deadline, rate, server, prefix, n):
    t = Tally()
    for i in paced(deadline, rate):
        name = "%s%d.soak.test" % (prefix, i % n)
        t.names.add(name)
        try:
            addr = dns_query(server, name, (i * 7919) & 0xFFFF)
        except (OSError, ValueError) as e:
            t.fail("dns %s via %s: %s" % (name, server, e))
            continue
        if ipaddress.ip_address(addr) not in FAKE:
            t.fail("dns %s: %s is not a fake-ip address (not answered by tpgate?)" % (name, addr))
            continue
        get(t, addr, 80, host_header=name)
    return t



# ---------------------------------------------------------------- the summary and checks
def median(xs):
    xs = sorted(xs)
    return xs[(len(xs) - 1) // 2] if xs else None


def wrk_result(path):
    """Requests, bytes and failures (socket errors + non-2xx/3xx) from wrk's text output."""
    import re
    text = open(path).read()
    m = re.search(r"(\d+) requests in [^,]+, ([\d.]+)([KMGT]?B) read", text)
    if not m:
        return {"ok": 0, "failed": 1, "bytes": 0, "errors": ["no wrk summary: " + text[-200:]]}
    unit = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}[m.group(3)]
    failed, errors = 0, []
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if e:
        failed += sum(int(x) for x in e.groups())
        errors.append(e.group(0))
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if n:
        failed += int(n.group(1))
        errors.append(n.group(0))
    return {"ok": int(m.group(1)) - (int(n.group(1)) if n else 0), "failed": failed,
            "bytes": int(float(m.group(2)) * unit), "errors": errors}


def report(work, cfg):
    import glob
    rows = [line.split() for line in open(work + "/samples.tsv")]
    head, rows = rows[0], [[float(x) for x in r] for r in rows[1:]]
    col = {name: i for i, name in enumerate(head)}
    window, warm = cfg["window"], cfg["warmup"]
    problems = []

    # Loads: every request must have succeeded.
    loads = []
    for path in sorted(glob.glob(work + "/load-*.json")):
        name = os.path.basename(path)[5:-5]
        lines = open(path).read().strip().splitlines()
        try:
            r = json.loads(lines[-1])
        except (IndexError, ValueError):
            r = {"ok": 0, "failed": 1, "bytes": 0, "errors": ["no result (did it crash?)"]}
        loads.append((name, r))
    for path in sorted(glob.glob(work + "/wrk-*.txt")):
        loads.append((os.path.basename(path)[:-4], wrk_result(path)))
    bulk = {"ok": 0, "failed": 0, "bytes": 0, "errors": []}
    for path in sorted(glob.glob(work + "/iperf-*.json")):
        try:
            d = json.load(open(path))
            if "error" in d:
                raise ValueError(d["error"])
            bulk["ok"] += 1
            bulk["bytes"] += int(d["end"]["sum_received"]["bytes"])
        except (ValueError, KeyError) as e:
            bulk["failed"] += 1
            if len(bulk["errors"]) < 5:
                bulk["errors"].append("%s: %s" % (os.path.basename(path), e))
    loads.append(("tcp-bulk (iperf3 runs)", bulk))
    for name, r in loads:
        if r["failed"] or not r["ok"]:
            problems.append("load %s: %d failed, %d ok: %s" % (name, r["failed"], r["ok"],
                                                               "; ".join(r["errors"][:3])))

    # Gauges after warm-up: within 10 % of their median (or an absolute slack).
    after = [r for r in rows if r[col["t"]] >= warm]
    flat = [("rss_kib", "RSS", 0.10, 4096), ("fds", "open fds", 0.10, 8),
            ("tasks", "tokio tasks", 0.10, 8), ("nat", "UDP NAT flows", 0.10, 4)]
    for key, label, rel, slack in flat:
        xs = [r[col[key]] for r in after]
        if len(xs) < 3:
            problems.append("%s: only %d samples after warm-up" % (label, len(xs)))
            continue
        m = median(xs)
        tol = max(rel * m, slack)
        lo, hi = min(xs), max(xs)
        if hi - m > tol or m - lo > tol:
            problems.append("%s not flat after warm-up: %g..%g, median %g (allowed ±%g)"
                            % (label, lo, hi, m, tol))
    fake = max(r[col["fakeip"]] for r in rows)
    if fake > cfg["names"]:
        problems.append("fake-ip table holds %d addresses, more than the %d names asked"
                        % (fake, cfg["names"]))
    flows = max(r[col["flows"]] for r in rows)
    if flows > cfg["flow_bound"]:
        problems.append("flows_active reached %d, above the bound %d (load concurrency %d)"
                        % (flows, cfg["flow_bound"], cfg["concurrency"]))
    for op, okn in (("reloads", "reload_ok"), ("switches", "switch_ok"), ("refreshes", "refresh_ok")):
        if cfg[op + "_failed"]:
            problems.append("%d of %d %s failed" % (cfg[op + "_failed"], cfg[op], op))
        if cfg[op] == 0:
            problems.append("no %s were done" % op)

    # The table: min/median/max of each gauge per window.
    # The sample at the very end (t = duration) belongs to the last window.
    nwin = max(1, cfg["duration"] // window)
    wins = [[r for r in rows if min(int(r[col["t"]] // window), nwin - 1) == w]
            for w in range(nwin)]
    wins = [w for w in wins if w]

    def per_window(key, scale=1.0, fmt="%.0f"):
        out = []
        for w in wins:
            xs = [r[col[key]] / scale for r in w]
            out.append("/".join(fmt % v for v in (min(xs), median(xs), max(xs))))
        return out

    def rate_window(key, scale, fmt):
        # New flows (or bytes) per second within each window, from the counter's deltas.
        out = []
        prev = None
        for w in wins:
            xs = []
            for r in w:
                if prev is not None and r[col["t"]] > prev[col["t"]]:
                    xs.append((r[col[key]] - prev[col[key]]) / (r[col["t"]] - prev[col["t"]]) / scale)
                prev = r
            out.append("/".join(fmt % v for v in (min(xs), median(xs), max(xs))) if xs else "—")
        return out

    metrics = [("RSS MiB", per_window("rss_kib", 1024, "%.1f")),
               ("open fds", per_window("fds")),
               ("threads", per_window("threads")),
               ("tokio tasks", per_window("tasks")),
               ("UDP NAT flows", per_window("nat")),
               ("flows active", per_window("flows")),
               ("fake-ip used", per_window("fakeip")),
               ("new flows/s", rate_window("flows_total", 1, "%.0f")),
               ("relayed MB/s", rate_window("bytes_total", 1e6, "%.1f"))]
    labels = ["%d-%ds" % (k * window, (k + 1) * window) for k in range(len(wins))]
    print()
    print("tpgate soak: %s min, %s; a sample every %d s; min/median/max per %d s window;"
          % (cfg["minutes"], cfg["variant"], cfg["interval"], window))
    print("reload + provider refresh + group switch every %d s; warm-up: the first %d s"
          % (cfg["period"], warm))
    print()
    if len(wins) <= 8:   # one row per metric, a column per window
        table = [["metric"] + labels] + [[m] + v for m, v in metrics]
    else:                # too many windows for the width of a screen: one row per window
        table = [["window"] + [m for m, _ in metrics]] + \
            [[labels[i]] + [v[i] for _, v in metrics] for i in range(len(wins))]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for k, r in enumerate(table):
        print("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print()
    total_req = sum(r["ok"] for n, r in loads if not n.startswith("tcp-bulk"))
    total_bytes = sum(r["bytes"] for _, r in loads)
    print("loads: " + ", ".join("%s %d ok/%d failed" % (n, r["ok"], r["failed"]) for n, r in loads))
    print("totals: %d requests, %.1f MB of payload (%.1f MB relayed by tpgate), %d/%d reloads, "
          "%d/%d group switches, %d/%d provider refreshes, %d distinct names asked"
          % (total_req, total_bytes / 1e6, rows[-1][col["bytes_total"]] / 1e6,
             cfg["reloads"] - cfg["reloads_failed"], cfg["reloads"],
             cfg["switches"] - cfg["switches_failed"], cfg["switches"],
             cfg["refreshes"] - cfg["refreshes_failed"], cfg["refreshes"], cfg["names"]))
    print("bounds: flows_active max %d (bound %d), fake-ip used max %d (of %d names); flat after "
          "warm-up: within 10 %% of the median, at least ±4 MiB RSS, ±8 fds, ±8 tasks, ±4 NAT flows"
          % (flows, cfg["flow_bound"], fake, cfg["names"]))
    print()
    if problems:
        for p in problems:
            print("FAIL: " + p)
        return 1
    print("PASS: every request succeeded; RSS, fds, tasks and NAT size flat after warm-up; "
          "fake-ip table and connection registry bounded")
    return 0


def main():
    if sys.argv[1] == "report":  # report WORK_DIR JSON_CONFIG
        sys.exit(report(sys.argv[2], json.loads(sys.argv[3])))
    mode, deadline, rate = sys.argv[1], time.monotonic() + float(sys.argv[2]), float(sys.argv[3])
    a = sys.argv[4:]
    if mode == "http":
        t = run_http(deadline, rate, a)
    elif mode == "udp":
        t = run_udp(deadline, rate, int(a[0]), a[1], int(a[2]))
    elif mode == "stream":
        t = run_stream(deadline, rate, a[0], int(a[1]))
    elif mode == "dns":
        t = run_dns(deadline, rate, a[0], a[1], int(a[2]))
    elif mode == "echo":  # the server side: echo every datagram on [::]:PORT (both families)
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", int(a[0])))
        while time.monotonic() < deadline:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data, peer = s.recvfrom(65535)
            except socket.timeout:
                continue
            s.sendto(data, peer)
        return
    else:
        sys.exit("unknown mode " + mode)
    t.dump()


if __name__ == "__main__":
    main()
