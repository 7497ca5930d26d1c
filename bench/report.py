#!/usr/bin/env python3
"""The markdown table of bench/run.sh: medians per case and proxy, tpgate's ratios to kernel
forwarding and to each peer, and the issue's target for the row with whether tpgate met it.

Usage: report.py RESULTS.tsv NAME=LABEL...   (RESULTS: one `metric<TAB>proxy<TAB>value` per
run; the NAME=LABEL pairs give the proxies, in column order, and their column headings).
A value starting with `!` is a failed run of a peer: the cell shows "—" and a numbered note
under the table gives the reason (a cell with any failed round shows no number). Lines
`note<TAB>proxy<TAB>text` are printed under the table too, each distinct one once.
The spread of every cell (min..max over the rounds) goes to stderr.
"""

import statistics
import sys
from collections import defaultdict

HI, LO = "↑", "↓"

# key, label, unit, decimals, better, scale, target
ROWS = [
    ("tcp1_up", "TCP 1 stream up", "Gbit/s", 2, HI, 1, "tcp"),
    ("tcp1_down", "TCP 1 stream down", "Gbit/s", 2, HI, 1, "tcp"),
    ("tcp4_up", "TCP 4 streams up", "Gbit/s", 2, HI, 1, "tcp"),
    ("tcp4_down", "TCP 4 streams down", "Gbit/s", 2, HI, 1, "tcp"),
    ("http_close_rps", "HTTP new connections (Connection: close)", "conn/s", 0, HI, 1, "connps"),
    ("http_close_p50", "HTTP close, latency p50", "ms", 3, LO, 1, None),
    ("http_close_p99", "HTTP close, latency p99", "ms", 3, LO, 1, "p99"),
    ("http_close_errors", "HTTP close, socket errors", "count", 0, LO, 1, None),
    ("http_keepalive_rps", "HTTP keep-alive requests", "req/s", 0, HI, 1, None),
    ("http_keepalive_p50", "HTTP keep-alive, latency p50", "ms", 3, LO, 1, None),
    ("http_keepalive_p99", "HTTP keep-alive, latency p99", "ms", 3, LO, 1, "p99"),
    ("udp64_pps", "UDP 64 B, rate at < 1 % loss", "kpps", 1, HI, 1e-3, "udp"),
    ("udp64_halfloss", "UDP 64 B, loss at half that rate", "%", 2, LO, 1, "noloss"),
    ("udp1400_pps", "UDP 1400 B, rate at < 1 % loss", "kpps", 1, HI, 1e-3, "udp"),
    ("udp1400_mbps", "UDP 1400 B, goodput at < 1 % loss", "Mbit/s", 0, HI, 1, None),
    ("udp1400_halfloss", "UDP 1400 B, loss at half that rate", "%", 2, LO, 1, "noloss"),
    ("churn_pct", "UDP churn, one-datagram flows delivered", "%", 1, HI, 1, "churn"),
    ("churn_fps", "UDP churn, flows delivered per second", "flows/s", 0, HI, 1, None),
    ("idle_held", "Idle TCP: connections held", "conns", 0, HI, 1, None),
    ("mem_per_conn_kib", "Idle TCP: RSS per connection", "KiB", 2, LO, 1, "mem"),
    ("fd_per_conn", "Idle TCP: fds per connection", "fds", 2, LO, 1, None),
    ("mem_base_kib", "Idle TCP: RSS baseline", "KiB", 0, LO, 1, None),
    ("mem_after_kib", "After close: RSS above baseline", "KiB", 0, LO, 1, "memback"),
    ("fd_after", "After close: fds above baseline", "fds", 0, LO, 1, "fdback"),
    ("cpu_per_gb", "Gateway CPU per GB (TCP bulk runs)", "s/GB", 3, LO, 1, None),
    ("machine_cpu_per_gb", "Machine CPU per GB, every process and the kernel (TCP bulk runs)", "s/GB", 3, LO, 1, None),
    ("rl_tcp1_up", "Rule list: TCP 1 stream up, DIRECT by address", "Gbit/s", 2, HI, 1, None),
    ("rl_tcp1_down", "Rule list: TCP 1 stream down, DIRECT by address", "Gbit/s", 2, HI, 1, None),
    ("rl_tcp4_up", "Rule list: TCP 4 streams up, DIRECT by address", "Gbit/s", 2, HI, 1, None),
    ("rl_tcp4_down", "Rule list: TCP 4 streams down, DIRECT by address", "Gbit/s", 2, HI, 1, None),
    ("rl_cpu_per_gb", "Rule list: gateway CPU per GB (its TCP bulk runs)", "s/GB", 3, LO, 1, None),
    ("rl_machine_cpu_per_gb", "Rule list: machine CPU per GB (its TCP bulk runs)", "s/GB", 3, LO, 1, None),
    ("rl_http_keepalive_rps", "Rule list: HTTP keep-alive by name, MATCH → upstream", "req/s", 0, HI, 1, None),
    ("rl_http_keepalive_p50", "Rule list: HTTP via upstream, latency p50", "ms", 3, LO, 1, None),
    ("rl_http_keepalive_p99", "Rule list: HTTP via upstream, latency p99", "ms", 3, LO, 1, None),
    ("rl_http_keepalive_errors", "Rule list: HTTP via upstream, socket errors", "count", 0, LO, 1, None),
]

TARGETS = {
    "tcp": "≥ 0.8 × kernel and ≥ 1.5 × best peer",
    "connps": "≥ 1.3 × best peer",
    "p99": "≤ every peer",
    "udp": "≥ 1.5 × best peer",
    "noloss": "no loss (< 0.1 %)",
    "churn": "no collapse (≥ 90 %)",
    "mem": "≤ 10 KiB",
    "memback": "back to baseline (≤ 1024 KiB)",
    "fdback": "back to baseline (≤ 2)",
}


def met(kind, mine, kernel, peers):
    """Whether tpgate's median `mine` meets the row's target; None when it cannot be told."""
    if mine is None:
        return None
    if kind == "tcp":
        if kernel is None or not peers:
            return None
        return mine >= 0.8 * kernel and mine >= 1.5 * max(peers)
    if kind in ("connps", "udp"):
        return mine >= (1.3 if kind == "connps" else 1.5) * max(peers) if peers else None
    if kind == "p99":
        return mine <= min(peers) if peers else None
    return {
        "noloss": lambda: mine < 0.1,
        "churn": lambda: mine >= 90,
        "mem": lambda: mine <= 10,
        "memback": lambda: mine <= 1024,
        "fdback": lambda: mine <= 2,
    }[kind]()


def main():
    results, *pairs = sys.argv[1:]
    names = [p.split("=", 1)[0] for p in pairs]
    labels = dict(p.split("=", 1) for p in pairs)
    runs = defaultdict(list)
    failed = defaultdict(list)  # (key, proxy) -> numbers of the notes saying why
    notes = []  # distinct lines under the table, in order of appearance
    def note(text):
        if text not in notes:
            notes.append(text)
        return notes.index(text) + 1
    with open(results) as f:
        for line in f:
            key, proxy, value = line.rstrip("\n").split("\t", 2)
            if key == "note":
                note(value)
            elif value.startswith("!"):
                k = note(f"{labels.get(proxy, proxy)} failed: {value[1:]}")
                if k not in failed[key, proxy]:
                    failed[key, proxy].append(k)
            elif value:
                runs[key, proxy].append(float(value))
    med = {k: statistics.median(v) for k, v in runs.items() if k not in failed}
    # tpgate-* columns are tpgate itself (another relay or setting): diagnostic, not peers.
    peers = [n for n in names if n != "kernel" and not n.startswith("tpgate")]

    head = ["case", "unit", "better"] + [labels[n] for n in names]
    if "tpgate" in names:
        head += [f"tpgate ÷ {labels[n]}" for n in names if n != "tpgate"]
        head += ["target for tpgate", "met"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for key, label, unit, dec, better, scale, target in ROWS:
        if not any((key, n) in med or (key, n) in failed for n in names):
            continue
        cells = [label, unit, better]
        for n in names:
            v = med.get((key, n))
            if (key, n) in failed:
                cells.append("— [" + ", ".join(str(k) for k in failed[key, n]) + "]")
            else:
                cells.append("—" if v is None else f"{v * scale:,.{dec}f}")
        if "tpgate" in names:
            mine = med.get((key, "tpgate"))
            for n in names:
                if n == "tpgate":
                    continue
                other = med.get((key, n))
                ok = mine is not None and other is not None and other > 0
                cells.append(f"{mine / other:.2f}" if ok else "—")
            values = [med[key, n] for n in peers if (key, n) in med]
            verdict = met(target, mine, med.get((key, "kernel")), values) if target else None
            cells.append(TARGETS[target] if target else "—")
            cells.append({None: "—", True: "yes", False: "**no**"}[verdict])
        print("| " + " | ".join(cells) + " |")
    if notes:
        print()
        for k, text in enumerate(notes, 1):
            print(f"[{k}] {text}  ")

    for (key, proxy), v in sorted(runs.items()):
        if len(v) > 1:
            spread = ", ".join(f"{x:g}" for x in v)
            print(f"  {key} {proxy}: {spread}", file=sys.stderr)


if __name__ == "__main__":
    main()
