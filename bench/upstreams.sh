#!/usr/bin/env bash
# Throughput through each of tpgate's outbounds, next to a peer client driving the same
# upstream where one exists (sslocal from shadowsocks-rust for Shadowsocks), in a throwaway
# lab of network namespaces:
#
#   client 198.51.100.2 ── lan0 ─ gateway (tpgate | sslocal | plain forwarding)
#                                   │ wan0 203.0.113.1
#                      switch (bridge) ── server 203.0.113.2 (iperf3 -s)
#                                   └──── upstream 203.0.113.3 (microsocks :1080, danted :1081,
#                                         tinyproxy :8888, ssserver :8388/:8389, trojan :443)
#
# Each case runs iperf3 from the client to the server (one TCP stream, BENCH_SECONDS, upload
# and then download with -R), BENCH_REPS rounds interleaved over all cases; the table shows
# the median of each. The server's log tells who connected, so a case whose traffic did not
# go the intended way (say, straight through the gateway) fails instead of reporting.
#
# Everything lives in namespaces named tpgb-$$-* that are deleted on exit; the machine's own
# network namespace (firewall, routes, sysctls) is never touched.
#
# Usage: sudo bench/upstreams.sh            (progress on stderr, the markdown table on stdout)
# Env:   BENCH_SECONDS (default 5), BENCH_REPS (default 3), TPGATE_BIN (default: built with
#        cargo build --release -p tpgate), BENCH_NO_TROJAN=1 to skip the Trojan case,
#        BENCH_UDP=0 to skip the UDP cases (datagrams/s through each upstream that carries UDP),
#        BENCH_TCP=0 the TCP ones.
# Needs: apt-get (for iperf3 microsocks dante-server tinyproxy redsocks nftables iproute2
#        python3),
#        cargo (shadowsocks-rust and the bench's Trojan server are built once into
#        bench/.tools/, which takes several minutes).
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
secs=${BENCH_SECONDS:-5}
reps=${BENCH_REPS:-3}

require_root

# ---------------------------------------------------------------- tools
apt_install iperf3:iperf3 microsocks:microsocks danted:dante-server tinyproxy:tinyproxy \
  redsocks:redsocks nft:nftables ip:iproute2 python3:python3
danted_bin=$(command -v danted || echo /usr/sbin/danted)
redsocks_bin=$(command -v redsocks || echo /usr/sbin/redsocks)
redsocks_version=$(dpkg-query -W -f='${Version}' redsocks 2>/dev/null | sed 's/-.*//')

install_shadowsocks
ss_version=$("$tools/bin/ssserver" --version | awk '{print $2}')

trojan_bin=
[ -n "${BENCH_NO_TROJAN:-}" ] || trojan_bin=$(build_bench_crate trojan-server tpgate-bench-trojan-server)

bin=$(tpgate_binary)

# ---------------------------------------------------------------- lab
id=$$
C=tpgb-$id-c G=tpgb-$id-g W=tpgb-$id-w S=tpgb-$id-s U=tpgb-$id-u
work=$(mktemp -d /tmp/tpgb.XXXXXX)
pids=()        # long-lived servers, killed on exit
proxy_pid=     # tpgate or sslocal of the current case
peer_rules=    # config whose interception was installed by hand for a peer
peer_nat=      # whether the redsocks REDIRECT table is installed

stop_proxy() {
  if [ -n "$proxy_pid" ] && kill -0 "$proxy_pid" 2>/dev/null; then
    kill -TERM "$proxy_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$proxy_pid" 2>/dev/null || true
  fi
  [ -z "$proxy_pid" ] || wait "$proxy_pid" 2>/dev/null || true
  proxy_pid=
  if [ -n "$peer_rules" ]; then
    ip netns exec "$G" "$bin" down -c "$peer_rules" >/dev/null 2>&1 || true
    peer_rules=
  fi
  if [ -n "$peer_nat" ]; then
    ip netns exec "$G" nft delete table ip tpgb_redsocks 2>/dev/null || true
    peer_nat=
  fi
}

cleanup() {
  local status=$?
  set +e
  stop_proxy
  remove_lab "$status" "$C" "$G" "$S" "$U" "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A private copy: a rebuild of the tree during the run must not swap the binary under it.
cp "$bin" "$work/tpgate"
bin=$work/tpgate

log "building the lab ($C $G $W $S $U)"
for ns in "$C" "$G" "$W" "$S" "$U"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
# Every veth is created inside the lab (never in the root namespace).
ip -n "$G" link add lan0 type veth peer name eth0 netns "$C"
ip -n "$W" link add br0 type bridge
ip -n "$W" link set br0 up
for pair in "$G:wan0" "$S:eth0" "$U:eth0"; do
  ns=${pair%%:*} ifname=${pair#*:} port=p${ns##*-}
  ip -n "$W" link add "$port" type veth peer name "$ifname" netns "$ns"
  ip -n "$W" link set "$port" master br0 up
  ip -n "$ns" link set "$ifname" up
done
ip -n "$C" link set eth0 up
ip -n "$G" link set lan0 up
ip -n "$C" addr add 198.51.100.2/24 dev eth0
ip -n "$G" addr add 198.51.100.1/24 dev lan0
ip -n "$G" addr add 203.0.113.1/24 dev wan0
ip -n "$S" addr add 203.0.113.2/24 dev eth0
ip -n "$U" addr add 203.0.113.3/24 dev eth0
ip -n "$C" route add default via 198.51.100.1
ip -n "$S" route add 198.51.100.0/24 via 203.0.113.1
ip -n "$U" route add 198.51.100.0/24 via 203.0.113.1
ip netns exec "$G" sysctl -qw net.ipv4.ip_forward=1

log "starting iperf3 -s and the upstream servers"
ip netns exec "$S" iperf3 -s -B 203.0.113.2 --forceflush >"$work/iperf3-server.log" 2>&1 &
pids+=($!)

ss_aes_pw=tpgate-bench-password
ss_2022_pw=$(head -c16 /dev/urandom | base64)
trojan_pw=tpgate-bench-trojan
cat >"$work/danted.conf" <<EOF
logoutput: stderr
internal: 203.0.113.3 port = 1081
external: eth0
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass { from: 0/0 to: 0/0 }
socks pass { from: 0/0 to: 0/0 command: connect udpassociate udpreply }
EOF
cat >"$work/tinyproxy.conf" <<EOF
User nobody
Group nogroup
Port 8888
Listen 203.0.113.3
Timeout 60
LogLevel Warning
MaxClients 100
DisableViaHeader Yes
EOF
chmod 0644 "$work"/*.conf
chmod 0755 "$work"
in_u() { ip netns exec "$U" "$@" >>"$work/upstreams.log" 2>&1 & pids+=($!); }
in_u microsocks -i 203.0.113.3 -p 1080
in_u "$danted_bin" -f "$work/danted.conf"
in_u tinyproxy -d -c "$work/tinyproxy.conf"
in_u "$tools/bin/ssserver" -U -s 203.0.113.3:8388 -m aes-128-gcm -k "$ss_aes_pw"
in_u "$tools/bin/ssserver" -U -s 203.0.113.3:8389 -m 2022-blake3-aes-128-gcm -k "$ss_2022_pw"
ports=(1080 1081 8888 8388 8389)
if [ -n "$trojan_bin" ]; then
  in_u "$trojan_bin" 203.0.113.3:443 "$trojan_pw"
  ports+=(443)
fi
for port in "${ports[@]}"; do retry accepting "$U" 203.0.113.3 "$port"; done
retry accepting "$C" 203.0.113.2 5201

# ---------------------------------------------------------------- cases
# name | peer label | how the gateway relays | which source address iperf3 -s must see
cases=(
  "kernel forwarding (no proxy)|—|none|198.51.100.2"
  "DIRECT|—|tpgate:DIRECT|203.0.113.1"
  "socks5 (microsocks)|—|tpgate:microsocks|203.0.113.3"
  "socks5 (dante)|redsocks $redsocks_version|tpgate:dante|203.0.113.3"
  "socks5 (dante) (peer)|—|redsocks:socks5:1081|203.0.113.3"
  "http CONNECT (tinyproxy)|redsocks $redsocks_version|tpgate:tinyproxy|203.0.113.3"
  "http CONNECT (tinyproxy) (peer)|—|redsocks:http-connect:8888|203.0.113.3"
  "ss aes-128-gcm|sslocal $ss_version|tpgate:ss-aes|203.0.113.3"
  "ss aes-128-gcm (peer)|—|sslocal:8388:aes-128-gcm:$ss_aes_pw|203.0.113.3"
  "ss 2022-blake3-aes-128-gcm|sslocal $ss_version|tpgate:ss-2022|203.0.113.3"
  "ss 2022-blake3-aes-128-gcm (peer)|—|sslocal:8389:2022-blake3-aes-128-gcm:$ss_2022_pw|203.0.113.3"
)
[ -z "$trojan_bin" ] || cases+=("trojan (bench server, rustls)|—|tpgate:trojan|203.0.113.3")
[ "${BENCH_TCP:-1}" != 0 ] || cases=()

# One config for every tpgate case; only the MATCH target differs, and whether UDP is
# intercepted ($2: true for the UDP cases).
tpgate_config() {
  cat <<EOF
tproxy-port: 7893
routing-mark: 255
ipv6: false
log-level: info
intercept:
  lan-interfaces: [lan0]
  local: false
  udp: ${2:-false}
proxies:
  - {name: microsocks, type: socks5, server: 203.0.113.3, port: 1080}
  - {name: dante, type: socks5, server: 203.0.113.3, port: 1081, udp: true}
  - {name: tinyproxy, type: http, server: 203.0.113.3, port: 8888}
  - {name: ss-aes, type: ss, server: 203.0.113.3, port: 8388, cipher: aes-128-gcm, password: "$ss_aes_pw", udp: true}
  - {name: ss-2022, type: ss, server: 203.0.113.3, port: 8389, cipher: 2022-blake3-aes-128-gcm, password: "$ss_2022_pw", udp: true}
  - {name: trojan, type: trojan, server: 203.0.113.3, port: 443, password: "$trojan_pw", sni: trojan.test, skip-cert-verify: true}
rules:
  - MATCH,$1
EOF
}

# The interception tpgate would install (TCP; UDP too with $1 = udp), by hand, for a peer.
install_peer_interception() {
  local cfg=$work/tpgate-DIRECT.yaml
  [ "${1:-}" != udp ] || cfg=$work/tpgate-udp-DIRECT.yaml
  install_plan "$G" "$bin" "$cfg"
  peer_rules=$cfg
}

# redsocks (libevent, one thread) behind nftables REDIRECT, the only interception it has:
# every TCP connection entering from the LAN goes to its port.
start_redsocks() {
  local type=$1 port=$2
  cat >"$work/redsocks.conf" <<EOF
base { log_debug = off; log_info = off; log = stderr; daemon = off; redirector = iptables; }
redsocks { local_ip = 0.0.0.0; local_port = 12345; ip = 203.0.113.3; port = $port; type = $type; }
EOF
  ip netns exec "$G" nft -f - <<EOF
table ip tpgb_redsocks {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "lan0" meta l4proto tcp redirect to :12345
  }
}
EOF
  peer_nat=1
  ip netns exec "$G" "$redsocks_bin" -c "$work/redsocks.conf" >>"$work/redsocks.log" 2>&1 &
  proxy_pid=$!
  wait_listening 12345 "$work/redsocks.log"
}

# Waits until the gateway listens on TCP port $1 (the proxy's log is $2).
wait_listening() {
  for _ in $(seq 100); do
    ip netns exec "$G" ss -Htln "sport = :$1" | grep -q . && return 0
    kill -0 "$proxy_pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$2" >&2
  die "the proxy did not start (see $2)"
}

# Starts what case $1 (the "how" field) needs in the gateway; returns once it listens.
start_case() {
  local how=$1
  case $how in
    none) ;;
    tpgate:* | tpgate-udp:*)
      local cfg=$work/${how%%:*}-${how#*:}.yaml before
      touch "$work/tpgate.log"
      before=$(grep -cw ready "$work/tpgate.log" || true)
      ip netns exec "$G" env NO_COLOR=1 "$bin" run -c "$cfg" >>"$work/tpgate.log" 2>&1 &
      proxy_pid=$!
      for _ in $(seq 100); do
        [ "$(grep -cw ready "$work/tpgate.log" || true)" -gt "$before" ] && return 0
        kill -0 "$proxy_pid" 2>/dev/null || break
        sleep 0.1
      done
      tail -n 20 "$work/tpgate.log" >&2
      die "tpgate did not become ready ($how)"
      ;;
    sslocal:*)
      IFS=: read -r _ port method pw <<<"$how"
      install_peer_interception
      ip netns exec "$G" "$tools/bin/sslocal" -b 0.0.0.0:7893 --protocol redir \
        --tcp-redir tproxy -s "203.0.113.3:$port" -m "$method" -k "$pw" \
        --outbound-fwmark 255 >>"$work/sslocal.log" 2>&1 &
      proxy_pid=$!
      wait_listening 7893 "$work/sslocal.log"
      ;;
    sslocal-udp:*)
      IFS=: read -r _ port method pw <<<"$how"
      install_peer_interception udp
      ip netns exec "$G" "$tools/bin/sslocal" -b 0.0.0.0:7893 --protocol redir -U \
        --tcp-redir tproxy --udp-redir tproxy -s "203.0.113.3:$port" -m "$method" -k "$pw" \
        --outbound-fwmark 255 >>"$work/sslocal.log" 2>&1 &
      proxy_pid=$!
      wait_listening 7893 "$work/sslocal.log"
      for _ in $(seq 50); do
        ip netns exec "$G" ss -Huln 'sport = :7893' | grep -q . && break
        sleep 0.1
      done
      ;;
    redsocks:*)
      IFS=: read -r _ type port <<<"$how"
      start_redsocks "$type" "$port"
      ;;
  esac
}

# One iperf3 run from the client; prints Gbit/s received. $2 = "-R" for download.
iperf() {
  local expect=$1 dir=${2:-} json=$work/iperf.json before
  before=$(wc -l <"$work/iperf3-server.log")
  if ! timeout $((secs + 20)) ip netns exec "$C" iperf3 -c 203.0.113.2 -t "$secs" -O 1 -J \
    --connect-timeout 3000 ${dir:+"$dir"} >"$json" 2>&1; then
    log "iperf3 failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error","?"))' "$json" 2>/dev/null || head -c 300 "$json")"
    return 1
  fi
  # The server logs "Accepted connection from ADDR" for the control connection.
  local seen
  seen=$(tail -n +"$((before + 1))" "$work/iperf3-server.log" |
    sed -n 's/^Accepted connection from \([0-9.]*\),.*/\1/p' | head -n1)
  [ "$seen" = "$expect" ] || { log "iperf3 server saw $seen, expected $expect"; return 1; }
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$json"
}

for c in "${cases[@]}"; do
  IFS='|' read -r _ _ how _ <<<"$c"
  case $how in tpgate:*) tpgate_config "${how#tpgate:}" >"$work/tpgate-${how#tpgate:}.yaml" ;; esac
done
tpgate_config DIRECT >"$work/tpgate-DIRECT.yaml"
tpgate_config DIRECT true >"$work/tpgate-udp-DIRECT.yaml"
ip netns exec "$G" "$bin" check -c "$work/tpgate-DIRECT.yaml" >&2

declare -A up down
load_start=$(cut -d' ' -f1 /proc/loadavg)
total=$(( ${#cases[@]} * reps ))
n=0
start=$SECONDS
for rep in $(seq "$reps"); do
  for i in "${!cases[@]}"; do
    IFS='|' read -r name _ how expect <<<"${cases[$i]}"
    n=$((n + 1))
    start_case "$how"
    u=$(iperf "$expect") || { stop_proxy; die "$name: upload run failed"; }
    d=$(iperf "$expect" -R) || { stop_proxy; die "$name: download run failed"; }
    stop_proxy
    up[$i]+="$u " down[$i]+="$d "
    log "[$n/$total, $((SECONDS - start)) s] round $rep: $name: up $u, down $d Gbit/s"
  done
done

if grep -qiE ' (WARN|ERROR) ' "$work/tpgate.log"; then
  log "tpgate logged warnings or errors:"
  grep -iE ' (WARN|ERROR) ' "$work/tpgate.log" | sort | uniq -c | sort -rn | head -n 20 >&2
fi

# ---------------------------------------------------------------- UDP
# Datagrams through each upstream that carries UDP (SOCKS5 UDP ASSOCIATE and Shadowsocks;
# the bench's Trojan server takes CONNECT only), next to sslocal's UDP relay for
# Shadowsocks: iperf3 -u from the client, 512-byte datagrams offered as fast as the client
# sends for BENCH_SECONDS; the result is what the server received per second (what the path
# delivers overloaded) and the loss. Interleaved
# rounds like the TCP cases; BENCH_UDP=0 skips them.
udp_cases=(
  "kernel forwarding (no proxy)|—|none|198.51.100.2"
  "DIRECT|—|tpgate-udp:DIRECT|203.0.113.1"
  "socks5 (dante)|—|tpgate-udp:dante|203.0.113.3"
  "ss aes-128-gcm|sslocal $ss_version|tpgate-udp:ss-aes|203.0.113.3"
  "ss aes-128-gcm (peer)|—|sslocal-udp:8388:aes-128-gcm:$ss_aes_pw|203.0.113.3"
  "ss 2022-blake3-aes-128-gcm|sslocal $ss_version|tpgate-udp:ss-2022|203.0.113.3"
  "ss 2022-blake3-aes-128-gcm (peer)|—|sslocal-udp:8389:2022-blake3-aes-128-gcm:$ss_2022_pw|203.0.113.3"
)
[ "${BENCH_UDP:-1}" != 0 ] || udp_cases=()

# One UDP iperf3 run from the client; prints "received/s loss%".
iperf_udp() {
  local expect=$1 json=$work/iperf-udp.json before seen
  before=$(wc -l <"$work/iperf3-server.log")
  if ! timeout $((secs + 20)) ip netns exec "$C" iperf3 -c 203.0.113.2 -u -l 512 -b 0 \
    -t "$secs" -J --connect-timeout 3000 >"$json" 2>&1; then
    log "iperf3 -u failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error","?"))' "$json" 2>/dev/null || head -c 300 "$json")"
    return 1
  fi
  seen=$(tail -n +"$((before + 1))" "$work/iperf3-server.log" |
    sed -n 's/^Accepted connection from \([0-9.]*\),.*/\1/p' | head -n1)
  [ "$seen" = "$expect" ] || { log "iperf3 server saw $seen, expected $expect"; return 1; }
  python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))["end"]["sum_received"]
print("%.0f %.2f" % ((r["packets"] - r["lost_packets"]) / r["seconds"], r["lost_percent"]))' "$json"
}

declare -A upps uloss
for c in "${udp_cases[@]}"; do
  IFS='|' read -r _ _ how _ <<<"$c"
  case $how in tpgate-udp:*) tpgate_config "${how#*:}" true >"$work/tpgate-udp-${how#*:}.yaml" ;; esac
done
utotal=$(( ${#udp_cases[@]} * reps ))
n=0
for rep in $(seq "$reps"); do
  for i in "${!udp_cases[@]}"; do
    IFS='|' read -r name _ how expect <<<"${udp_cases[$i]}"
    n=$((n + 1))
    start_case "$how"
    r=$(iperf_udp "$expect") || { stop_proxy; die "$name: UDP run failed"; }
    stop_proxy
    read -r pps loss <<<"$r"
    upps[$i]+="$pps " uloss[$i]+="$loss "
    log "[$n/$utotal, $((SECONDS - start)) s] UDP round $rep: $name: $pps datagrams/s received, loss $loss %"
  done
done

# ---------------------------------------------------------------- table
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
echo "Machine: $(nproc) CPUs ($cpu), Linux $(uname -r); $(date -u +%Y-%m-%d);" \
  "iperf3 $(iperf3 --version | head -n1 | awk '{print $2}'), 1 TCP stream, ${secs} s" \
  "(+1 s omitted), median of $reps interleaved rounds; up = client → server, down = -R;" \
  "1-min load average $load_start at the start, $(cut -d' ' -f1 /proc/loadavg) at the end."
echo
[ "${#cases[@]}" = 0 ] || {
  echo "| outbound | peer | tpgate Gbit/s (up, down) | peer Gbit/s (up, down) | ratio tpgate/peer (up, down) |"
  echo "| --- | --- | --- | --- | --- |"
}
for i in "${!cases[@]}"; do
  IFS='|' read -r name peer how _ <<<"${cases[$i]}"
  case $name in *"(peer)") continue ;; esac
  mu=$(median "${up[$i]}") md=$(median "${down[$i]}")
  if [ "$how" = none ]; then
    echo "| $name | — | $(fmt "$mu"), $(fmt "$md") (ceiling, no proxy) | — | — |"
  elif [ "$peer" = "—" ]; then
    echo "| $name | — | $(fmt "$mu"), $(fmt "$md") | — | — |"
  else
    j=$((i + 1))   # the peer case follows its tpgate case
    pu=$(median "${up[$j]}") pd=$(median "${down[$j]}")
    echo "| $name | $peer | $(fmt "$mu"), $(fmt "$md") | $(fmt "$pu"), $(fmt "$pd") | $(ratio "$mu" "$pu"), $(ratio "$md" "$pd") |"
  fi
done
if [ "${#udp_cases[@]}" -gt 0 ]; then
  echo
  echo "UDP: iperf3 -u, 512-byte datagrams offered as fast as the client sends, ${secs} s, median of $reps interleaved rounds: datagrams per second the server received (loss)."
  echo
  echo "| outbound | peer | tpgate datagrams/s (loss) | peer datagrams/s (loss) | ratio tpgate/peer |"
  echo "| --- | --- | --- | --- | --- |"
  for i in "${!udp_cases[@]}"; do
    IFS='|' read -r name peer how _ <<<"${udp_cases[$i]}"
    case $name in *"(peer)") continue ;; esac
    m=$(median "${upps[$i]}") l=$(median "${uloss[$i]}")
    if [ "$how" = none ]; then
      echo "| $name | — | $(fmt "$m" 0) ($(fmt "$l" 1) %) (ceiling, no proxy) | — | — |"
    elif [ "$peer" = "—" ]; then
      echo "| $name | — | $(fmt "$m" 0) ($(fmt "$l" 1) %) | — | — |"
    else
      j=$((i + 1))
      pm=$(median "${upps[$j]}") pl=$(median "${uloss[$j]}")
      echo "| $name | $peer | $(fmt "$m" 0) ($(fmt "$l" 1) %) | $(fmt "$pm" 0) ($(fmt "$pl" 1) %) | $(ratio "$m" "$pm") |"
    fi
  done
fi
log "raw runs (Gbit/s): $(for i in "${!cases[@]}"; do IFS='|' read -r name _ <<<"${cases[$i]}"; printf '\n  %s: up %s/ down %s' "$name" "${up[$i]}" "${down[$i]}"; done)"
log "done in $((SECONDS - start)) s"
