#!/usr/bin/env bash
# tpgate demo in a throwaway lab of three network namespaces:
#
#   client (198.51.100.2, 2001:db8:1::2)
#     | LAN veth
#   gw: tpgate runs here (LAN 198.51.100.1 / 2001:db8:1::1, WAN 203.0.113.1 / 2001:db8:2::1)
#     | WAN veth
#   server (203.0.113.2, 2001:db8:2::2; bypassed extra address 192.0.2.2)
#
# It starts tpgate in the gateway, makes HTTP requests (curl) and UDP exchanges (socat) from
# the client, and shows what the server saw, what tpgate logged, and what tpgate installed.
# Everything lives in namespaces with unique names that are deleted on exit: the machine's
# own network namespace (its firewall, routes and sysctls) is never touched.
#
# Usage: sudo scripts/demo.sh [PATH-TO-TPGATE]   (or TPGATE_BIN=...; default: the newest of
#        target/release/tpgate and target/debug/tpgate, built with cargo if neither exists)
# Needs: iproute2, nftables, curl, socat, python3.
set -euo pipefail

root_dir=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-${TPGATE_BIN:-}}
if [ -z "$bin" ]; then
  for candidate in "$root_dir/target/release/tpgate" "$root_dir/target/debug/tpgate"; do
    if [ -x "$candidate" ] && { [ -z "$bin" ] || [ "$candidate" -nt "$bin" ]; }; then
      bin=$candidate
    fi
  done
fi
if [ -z "$bin" ]; then
  echo "building tpgate (cargo build -p tpgate)..."
  (cd "$root_dir" && cargo build -q -p tpgate)
  bin=$root_dir/target/debug/tpgate
fi
[ -x "$bin" ] || { echo "no tpgate binary at $bin" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "the demo needs root (it creates network namespaces)" >&2; exit 1; }
for tool in ip nft curl socat python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done

id=$$
C=tpg-demo-$id-c
G=tpg-demo-$id-g
S=tpg-demo-$id-s
LAN=lan$(printf %x "$id")   # <= 15 chars
WAN=wan0
work=$(mktemp -d /tmp/tpg-demo.XXXXXX)
pids=()
tpgate_pid=

cleanup() {
  set +e
  if [ -n "$tpgate_pid" ] && kill -0 "$tpgate_pid" 2>/dev/null; then
    kill -TERM "$tpgate_pid"
    for _ in $(seq 50); do kill -0 "$tpgate_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$tpgate_pid" 2>/dev/null
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  for ns in "$C" "$G" "$S"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
  echo "lab removed"
}
trap cleanup EXIT

# Background processes are started with `ip netns exec` directly, not through these helpers,
# so that $! is their own pid and cleanup kills exactly them.
inc() { ip netns exec "$C" "$@"; }
ing() { ip netns exec "$G" "$@"; }
ins() { ip netns exec "$S" "$@"; }
section() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Runs "$@" until it succeeds, at most 100 times 0.1 s apart.
retry() {
  for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "gave up waiting for: $*" >&2
  return 1
}

section "building the lab ($C, $G, $S)"
for ns in "$C" "$G" "$S"; do
  ip netns add "$ns"
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  ip -n "$ns" link set lo up
done
# Both ends of each veth are created inside the lab, never in the root namespace.
ip -n "$G" link add "$LAN" type veth peer name eth0 netns "$C"
ip -n "$G" link add "$WAN" type veth peer name eth0 netns "$S"
ip -n "$C" addr add 198.51.100.2/24 dev eth0
ip -n "$C" addr add 2001:db8:1::2/64 dev eth0 nodad
ip -n "$G" addr add 198.51.100.1/24 dev "$LAN"
ip -n "$G" addr add 2001:db8:1::1/64 dev "$LAN" nodad
ip -n "$G" addr add 203.0.113.1/24 dev "$WAN"
ip -n "$G" addr add 2001:db8:2::1/64 dev "$WAN" nodad
ip -n "$S" addr add 203.0.113.2/24 dev eth0
ip -n "$S" addr add 2001:db8:2::2/64 dev eth0 nodad
ip -n "$S" addr add 192.0.2.2/32 dev lo
for pair in "$C eth0" "$S eth0" "$G $LAN" "$G $WAN"; do
  set -- $pair
  ip -n "$1" link set "$2" up
done
ip -n "$C" -4 route add default via 198.51.100.1
ip -n "$C" -6 route add default via 2001:db8:1::1
ip -n "$S" -4 route add default via 203.0.113.1
ip -n "$S" -6 route add default via 2001:db8:2::1
ip -n "$G" -4 route add 192.0.2.0/24 via 203.0.113.2
ing sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

section "starting servers in $S"
mkdir -p "$work/www"
echo "hello from the server" >"$work/www/hello.txt"
for addr in 203.0.113.2 2001:db8:2::2 192.0.2.2; do
  ip netns exec "$S" python3 -m http.server 80 --bind "$addr" --directory "$work/www" \
    >>"$work/http.log" 2>&1 &
  pids+=($!)
done
whoami='echo "server saw you as $SOCAT_PEERADDR:$SOCAT_PEERPORT"'
ip netns exec "$S" socat UDP4-RECVFROM:5353,bind=203.0.113.2,fork SYSTEM:"$whoami" &
pids+=($!)
ip netns exec "$S" socat UDP6-RECVFROM:5353,bind=[2001:db8:2::2],fork SYSTEM:"$whoami" &
pids+=($!)
retry ins curl -sf http://203.0.113.2/hello.txt
retry ins curl -sf 'http://[2001:db8:2::2]/hello.txt'
retry ins curl -sf http://192.0.2.2/hello.txt
: >"$work/http.log"

cat >"$work/tpgate.yaml" <<EOF
tproxy-port: 7893
routing-mark: 255
ipv6: true
intercept:
  lan-interfaces: [$LAN]
  local: true
  udp: true
  bypass: [192.0.2.0/24]
rules:
  - DST-PORT,25,REJECT
  - MATCH,DIRECT
EOF
section "config ($work/tpgate.yaml)"
cat "$work/tpgate.yaml"

section "starting $bin run in $G"
ip netns exec "$G" env NO_COLOR=1 "$bin" run -c "$work/tpgate.yaml" >"$work/tpgate.log" 2>&1 &
tpgate_pid=$!
for _ in $(seq 200); do
  grep -qw ready "$work/tpgate.log" && break
  kill -0 "$tpgate_pid" 2>/dev/null || break
  sleep 0.1
done
if ! grep -qw ready "$work/tpgate.log"; then
  echo "tpgate did not become ready:" >&2
  cat "$work/tpgate.log" >&2
  exit 1
fi
cat "$work/tpgate.log"

section "what tpgate installed in $G"
ing nft list table inet tpgate
echo "--- ip rule"
ing ip -4 rule
echo "--- ip -6 rule"
ing ip -6 rule
echo "--- ip route show table 100 / ip -6 route show table 100"
ing ip -4 route show table 100 2>/dev/null || true
ing ip -6 route show table 100 2>/dev/null || true

section "HTTP from the client (curl)"
for url in http://203.0.113.2/hello.txt 'http://[2001:db8:2::2]/hello.txt' \
  http://192.0.2.2/hello.txt; do
  printf '%-40s -> ' "$url"
  inc curl -sS --max-time 5 "$url" || true
done
echo "--- what the HTTP servers saw (203.0.113.1 / 2001:db8:2::1 = relayed by tpgate;"
echo "    198.51.100.2 = the client itself, for the bypassed 192.0.2.2)"
cat "$work/http.log"

section "UDP from the client and from the gateway itself (socat; the connected socket"
echo "   accepts only replies from the address it sent to)"
printf 'client  -> 203.0.113.2:5353:     '
echo hi | inc socat -t 2 -T 2 - UDP4:203.0.113.2:5353 || echo "(no reply)"
printf 'client  -> [2001:db8:2::2]:5353: '
echo hi | inc socat -t 2 -T 2 - UDP6:[2001:db8:2::2]:5353 || echo "(no reply)"
printf 'gateway -> 203.0.113.2:5353:     '
echo hi | ing socat -t 2 -T 2 - UDP4:203.0.113.2:5353 || echo "(no reply)"

section "REJECT: TCP to port 25"
inc curl -sS --max-time 5 http://203.0.113.2:25/ || true

section "tpgate log lines for the connections"
# The last line may still be on its way: wait for it, at most 2 s.
for _ in $(seq 20); do grep -q REJECT "$work/tpgate.log" && break; sleep 0.1; done
grep -E ' (tcp|udp) ' "$work/tpgate.log" || echo "(none)"

section "stopping tpgate (SIGTERM)"
kill -TERM "$tpgate_pid"
status=0
wait "$tpgate_pid" || status=$?
tpgate_pid=
echo "exit status: $status"
echo "--- nft list tables in $G (no tpgate table expected)"
ing nft list tables
echo "--- ip rule in $G"
ing ip -4 rule
