#!/usr/bin/env bash
# Soak: tpgate in a lab gateway for SOAK_MINUTES under a steady mixed load from the LAN and
# from the gateway itself, while the config is reloaded, a proxy provider refreshed and a
# select group switched every period; checked from the outside:
#
#   client 198.51.100.2      ── lan0 ─ gateway ─ wan0 ──  server 203.0.113.2, 2001:db8:2::2
#          2001:db8:1::2           198.51.100.1   203.0.113.1    nginx :80 :8080 :8081, iperf3,
#   wrk (keep-alive, churn),       2001:db8:1::1  2001:db8:2::1  UDP echo :9000, dnsmasq :53
#   iperf3 -c, soak.py loops       tpgate, soak.py loops         (*.soak.test), provider :8000
#                                                         upstream 203.0.113.3: microsocks
#                                                         :1080 (+ ssserver :8388 if built)
#
# Load (all of it through tpgate, at fixed rates): wrk keep-alive (v4) and wrk with
# Connection: close (v6), both paced by a 10 ms delay between requests,
# against nginx; iperf3 bulk runs (10 s each, 100 Mbit/s, alternately up and down); HTTP
# through a select group of upstreams (port 8080) and a group of an http proxy provider (port
# 8081); UDP request/response (v4 and v6, fixed sockets) and a UDP stream; DNS through
# tpgate's built-in server (fake-ip, dns-hijack) for a rotating set of names, each answer
# then fetched over HTTP at its fake address; from the gateway itself, HTTP, UDP and DNS.
# Every period: the config is rewritten (port 8081 alternates between the provider's group
# and DIRECT) and `tpgate reload`ed, the provider's file changes and it is refreshed
# (PUT /providers/proxies/prov), and the select group moves to its next member
# (PUT /proxies/Sel). Every SOAK_INTERVAL s the sampler reads /proc/PID (RSS, fds, threads)
# and /metrics (tokio tasks, UDP NAT size, flows, fake-ip use, flow and byte counters).
#
# Checks (exit 1, each failure named): no request of any load failed; RSS, open fds, tokio
# tasks and the UDP NAT table flat after warm-up (the first third): every sample within 10 %
# of their median, or of an absolute slack for small values (4 MiB, 8 fds, 8 tasks, 4 NAT
# flows); fake-ip addresses in use ≤ the distinct names asked; live flows ≤ twice the load's
# concurrency (closing connections linger briefly); every reload, refresh and switch done.
# The summary (stdout) is a table of min/median/max per window (60 s; 30 s for short runs).
#
# Everything lives in namespaces named tpgk-$$-* that are deleted on exit (also on failure or
# Ctrl-C); the machine's own network namespace (firewall, routes, sysctls) is never touched.
#
# Usage: sudo bench/soak.sh                 30 minutes
#        sudo bench/soak.sh --ci            2 minutes (same as SOAK_MINUTES=2)
# Env:   SOAK_MINUTES (30), SOAK_INTERVAL (sample period, s: 10), TPGATE_BIN (default: cargo
#        build --release -p tpgate), SOAK_SS=0 to leave Shadowsocks out of the long run.
# Needs: apt-get (nginx-light wrk iperf3 microsocks dnsmasq-base nftables iproute2 curl
#        python3); for runs of 5 minutes or more, shadowsocks-rust (built once into
#        bench/.tools/ by install_shadowsocks; short runs use it only when already built).
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

minutes=${SOAK_MINUTES:-30}
[ "${1:-}" != --ci ] || minutes=2
[[ $minutes =~ ^[0-9]+$ ]] && [ "$minutes" -ge 1 ] || die "SOAK_MINUTES must be a whole number ≥ 1"
interval=${SOAK_INTERVAL:-10}
duration=$((minutes * 60))
if [ "$minutes" -lt 5 ]; then
  period=30 window=30 variant="short (CI) variant: control operations every 30 s, not every minute"
else
  period=60 window=60 variant="control operations every minute"
fi
warmup=$((duration / 3))

require_root

# ---------------------------------------------------------------- tools
apt_install nginx:nginx-light wrk:wrk iperf3:iperf3 microsocks:microsocks dnsmasq:dnsmasq-base \
  nft:nftables ip:iproute2 curl:curl python3:python3
use_ss=
if [ -x "$tools/bin/ssserver" ]; then
  use_ss=1
elif [ "$minutes" -ge 5 ] && [ "${SOAK_SS:-1}" != 0 ]; then
  install_shadowsocks
  use_ss=1
fi
bin=$(tpgate_binary)
load=$root_dir/bench/soak.py

# ---------------------------------------------------------------- lab
id=$$
C=tpgk-$id-c G=tpgk-$id-g S=tpgk-$id-s
work=$(mktemp -d /tmp/tpgk.XXXXXX)
chmod 0755 "$work"
pids=()        # long-lived servers, killed on exit
loads=()       # the load generators
tpgate_pid=

cleanup() {
  local status=$?
  set +e
  for p in "${loads[@]}"; do kill -TERM "$p" 2>/dev/null; done
  if [ -n "$tpgate_pid" ] && kill -0 "$tpgate_pid" 2>/dev/null; then
    kill -TERM "$tpgate_pid"
    for _ in $(seq 50); do kill -0 "$tpgate_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$tpgate_pid" 2>/dev/null
  fi
  remove_lab "$status" "$C" "$G" "$S"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A private copy: a rebuild of the tree during the run must not swap the binary under it.
cp "$bin" "$work/tpgate"
bin=$work/tpgate

log "building the lab ($C $G $S)"
for ns in "$C" "$G" "$S"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
# Every veth is created inside the lab (never in the root namespace).
ip -n "$G" link add lan0 type veth peer name eth0 netns "$C"
ip -n "$G" link add wan0 type veth peer name eth0 netns "$S"
for ns in "$C" "$S"; do ip -n "$ns" link set eth0 up; done
ip -n "$G" link set lan0 up
ip -n "$G" link set wan0 up
ip -n "$C" addr add 198.51.100.2/24 dev eth0
ip -n "$C" addr add 2001:db8:1::2/64 dev eth0 nodad
ip -n "$G" addr add 198.51.100.1/24 dev lan0
ip -n "$G" addr add 2001:db8:1::1/64 dev lan0 nodad
ip -n "$G" addr add 203.0.113.1/24 dev wan0
ip -n "$G" addr add 2001:db8:2::1/64 dev wan0 nodad
ip -n "$S" addr add 203.0.113.2/24 dev eth0
ip -n "$S" addr add 203.0.113.3/24 dev eth0
ip -n "$S" addr add 203.0.113.4/24 dev eth0
ip -n "$S" addr add 2001:db8:2::2/64 dev eth0 nodad
ip -n "$C" route add default via 198.51.100.1
ip -n "$C" -6 route add default via 2001:db8:1::1
ip -n "$S" route add 198.51.100.0/24 via 203.0.113.1
ip -n "$S" -6 route add 2001:db8:1::/64 via 2001:db8:2::1
# A default route in the gateway, so its own connections to fake-ip addresses have a route to
# be intercepted from (local interception reroutes by mark after the route lookup).
ip -n "$G" route add default via 203.0.113.2
ip -n "$G" -6 route add default via 2001:db8:2::2
ip netns exec "$G" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
for ns in "$C" "$G" "$S"; do
  # Connection churn for the whole run: a wide port range, TIME_WAIT reusable.
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1
done

log "starting the servers (nginx, iperf3, UDP echo, dnsmasq, provider, microsocks${use_ss:+, ssserver})"
in_s() { ip netns exec "$S" "$@" >>"$work/servers.log" 2>&1 & pids+=($!); }
mkdir -p "$work/nginx" "$work/www"
cat >"$work/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000000;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  server {
    listen 203.0.113.2:80; listen [2001:db8:2::2]:80;
    listen 203.0.113.2:8080; listen 203.0.113.2:8081; listen 203.0.113.4:80;
    location / { return 200 "soak ok\n"; }
  }
}
EOF
in_s nginx -c "$work/nginx.conf"
in_s iperf3 -s -B 203.0.113.2
in_s python3 "$load" echo $((duration + 120)) 0 9000
# dnsmasq answers every *.soak.test with 203.0.113.4, an address only the fake-ip fetches use:
# tpgate remembers the real address its DIRECT resolution of a fake name got as standing for
# that name (redir-host's mapping), and then hands that name to an upstream for any flow to
# the address; sharing 203.0.113.2 would make microsocks get "lan7.soak.test", which it
# cannot resolve.
in_s dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
  --listen-address=203.0.113.2 --address=/soak.test/203.0.113.4 --local-ttl=60 --user=root \
  --pid-file="$work/dnsmasq.pid" --log-facility=-
in_s microsocks -i 203.0.113.3 -p 1080
ss_pw=tpgate-soak-password
[ -z "$use_ss" ] || in_s "$tools/bin/ssserver" -s 203.0.113.3:8388 -m aes-128-gcm -k "$ss_pw"

# The proxy provider: a file served over HTTP whose proxy changes name at each refresh.
provider_file() {
  printf 'proxies:\n  - {name: prov-socks-%s, type: socks5, server: 203.0.113.3, port: 1080}\n' "$1" \
    >"$work/www/prov.yaml.part"
  mv "$work/www/prov.yaml.part" "$work/www/prov.yaml"
}
provider_file 0
in_s python3 -m http.server --bind 203.0.113.2 --directory "$work/www" 8000

for port in 80 8080 8081 5201 8000; do retry accepting "$S" 203.0.113.2 "$port"; done
retry accepting "$S" 203.0.113.3 1080
[ -z "$use_ss" ] || retry accepting "$S" 203.0.113.3 8388

# ---------------------------------------------------------------- tpgate
# $1: 0 or 1, the variant of the config (port 8081 to the provider's group, or DIRECT).
sel_members="microsocks${use_ss:+, ss}, DIRECT"
tpgate_config() {
  local target=Prov
  [ "$1" = 0 ] || target=DIRECT
  cat <<EOF
tproxy-port: 7893
routing-mark: 255
ipv6: true
log-level: ${SOAK_LOG_LEVEL:-warning}
external-controller: 127.0.0.1:9090
secret: soak
state-file: $work/state.json
sniffer: {enable: false}
intercept:
  lan-interfaces: [lan0]
  local: true
  udp: true
  dns-hijack: true
dns:
  enable: true
  listen: '[::]:1053'
  enhanced-mode: fake-ip
  fake-ip-range: 198.18.0.1/16
  nameserver: [203.0.113.2]
proxies:
  - {name: microsocks, type: socks5, server: 203.0.113.3, port: 1080}
EOF
  [ -z "$use_ss" ] ||
    echo "  - {name: ss, type: ss, server: 203.0.113.3, port: 8388, cipher: aes-128-gcm, password: $ss_pw}"
  cat <<EOF
proxy-providers:
  prov: {type: http, url: 'http://203.0.113.2:8000/prov.yaml', path: $work/prov-cache.yaml, interval: 86400}
proxy-groups:
  - {name: Sel, type: select, proxies: [$sel_members]}
  - {name: Prov, type: select, use: [prov]}
rules:
  - DST-PORT,8080,Sel
  - DST-PORT,8081,$target
  - MATCH,DIRECT
EOF
}
cfg=$work/tpgate.yaml
tpgate_config 0 >"$cfg"
ip netns exec "$G" "$bin" check -c "$cfg" >"$work/check.log" 2>&1 ||
  { cat "$work/check.log" >&2; die "tpgate check refused the soak config"; }
ip netns exec "$G" env NO_COLOR=1 "$bin" run -c "$cfg" >>"$work/tpgate.log" 2>&1 &
tpgate_pid=$!
api() {  # api METHOD PATH [BODY]: prints the HTTP status
  ip netns exec "$G" curl -s -o /dev/null -w '%{http_code}' -m 10 -X "$1" \
    -H 'Authorization: Bearer soak' ${3:+-d "$3"} "http://127.0.0.1:9090$2" || true
}
# Ready once the controller answers (it starts after the interception is in place).
for _ in $(seq 100); do
  [ "$(api GET /version)" = 200 ] && break
  kill -0 "$tpgate_pid" 2>/dev/null || break
  sleep 0.1
done
[ "$(api GET /version)" = 200 ] || { tail -n 20 "$work/tpgate.log" >&2; die "tpgate did not become ready"; }

# ---------------------------------------------------------------- load
# Concurrency (connections or UDP sockets open at once), for the flows_active bound.
wrk_ka=4 wrk_churn=2
concurrency=$((wrk_ka + wrk_churn + 2)) # + iperf3 (control and data connection)
dns_names=0
log "starting the load for $minutes min (warm-up: the first $warmup s)"
run_load() {  # run_load NAME NS CONCURRENCY MODE ARGS...: a soak.py loop, result in load-NAME.json
  local name=$1 ns=$2 mode=$4
  concurrency=$((concurrency + $3))
  shift 4
  # Each loop runs 5 s past the last sample, so every sample sees the full load.
  timeout $((duration + 60)) ip netns exec "$ns" python3 "$load" "$mode" $((duration + 5)) "$@" \
    >"$work/load-$name.json" 2>>"$work/loads.log" &
  loads+=($!)
}
# The DNS loops ask 203.0.113.3:53, where nothing listens: only the hijack can answer them.
# (Not tpgate's own nameserver, 203.0.113.2: a query from the gateway that reuses the source
# port of one of tpgate's recent upstream queries would match that query's conntrack entry and
# skip the hijack's NAT, and the other way round.)
#        name               ns   conc mode  rate args
run_load lan-http-upstreams "$C" 1 http   20  http://203.0.113.2:8080/ http://203.0.113.2:8081/
run_load lan-udp-v4         "$C" 2 udp    40  2 203.0.113.2 9000
run_load lan-udp-v6         "$C" 2 udp    20  2 2001:db8:2::2 9000
run_load lan-udp-stream     "$C" 1 stream 200 203.0.113.2 9000
run_load lan-dns-fakeip     "$C" 1 dns    10  203.0.113.3 lan 64
run_load local-http         "$G" 1 http   10  http://203.0.113.2:80/ http://203.0.113.2:8080/
run_load local-udp          "$G" 1 udp    10  1 203.0.113.2 9000
run_load local-dns-fakeip   "$G" 1 dns    5   203.0.113.3 gw 16
dns_names=$((64 + 16))
# wrk paced by a delay between each connection's requests (10 ms: at most 400 requests/s
# keep-alive and 200 new connections/s), so the load stays the same whatever the machine
# does, and leaves CPU to the rest on a shared 2-core CI machine.
echo 'function delay() return 10 end' >"$work/pace.lua"
timeout $((duration + 60)) ip netns exec "$C" wrk -t1 -c"$wrk_ka" -d"$((duration + 5))s" --timeout 5s \
  -s "$work/pace.lua" http://203.0.113.2:80/ >"$work/wrk-lan-keepalive.txt" 2>&1 &
loads+=($!)
timeout $((duration + 60)) ip netns exec "$C" wrk -t1 -c"$wrk_churn" -d"$((duration + 5))s" --timeout 5s \
  -s "$work/pace.lua" -H 'Connection: close' 'http://[2001:db8:2::2]:80/' >"$work/wrk-lan-churn-v6.txt" 2>&1 &
loads+=($!)
# TCP bulk: back-to-back bounded iperf3 runs until the end (one server, one run at a time).
(
  end=$((SECONDS + duration - 5))
  for n in $(seq $((duration / 10))); do
    [ "$SECONDS" -lt "$end" ] || break
    dir=; [ $((n % 2)) = 0 ] && dir=-R
    timeout 40 ip netns exec "$C" iperf3 -c 203.0.113.2 -t 10 -b 100M -J --connect-timeout 3000 \
      ${dir:+"$dir"} >"$work/iperf-$n.json" 2>&1 || true
  done
) &
loads+=($!)

# ---------------------------------------------------------------- sample and operate
metric() {  # metric NAME: the sum of NAME's series in the last scrape
  awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.0f\n", s }' \
    <<<"$scrape"
}
printf 't\trss_kib\tfds\tthreads\ttasks\tnat\tflows\tfakeip\tflows_total\tbytes_total\n' \
  >"$work/samples.tsv"
sample() {
  local t=$1 rss fds threads
  kill -0 "$tpgate_pid" 2>/dev/null || { tail -n 20 "$work/tpgate.log" >&2; die "tpgate exited during the soak"; }
  scrape=$(ip netns exec "$G" curl -sf -m 5 -H 'Authorization: Bearer soak' \
    http://127.0.0.1:9090/metrics) || die "scraping /metrics failed at ${t} s"
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$tpgate_pid/status")
  threads=$(awk '/^Threads:/ {print $2}' "/proc/$tpgate_pid/status")
  fds=$(find "/proc/$tpgate_pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rss" "$fds" "$threads" \
    "$(metric tpgate_tokio_tasks)" "$(metric tpgate_udp_nat_flows)" \
    "$(metric tpgate_flows_active)" "$(metric tpgate_dns_fake_ip_used)" \
    "$(metric tpgate_flows_total)" "$(metric tpgate_route_bytes_total)" >>"$work/samples.tsv"
}
reloads=0 reloads_failed=0 switches=0 switches_failed=0 refreshes=0 refreshes_failed=0
read -r -a members <<<"${sel_members//,/}"
operate() {  # the period's reload, provider refresh and group switch
  local n=$1 code applied
  tpgate_config $((n % 2)) >"$cfg.part" && mv "$cfg.part" "$cfg"
  applied=$(metric 'tpgate_reloads_total{result="applied"}')
  reloads=$((reloads + 1))
  if ! ip netns exec "$G" "$bin" reload >>"$work/control.log" 2>&1; then
    reloads_failed=$((reloads_failed + 1)); log "reload $n: tpgate reload failed"
  else
    # Applied once the counter moves (the reload is asynchronous).
    for _ in $(seq 50); do
      scrape=$(ip netns exec "$G" curl -sf -m 5 -H 'Authorization: Bearer soak' \
        http://127.0.0.1:9090/metrics) || true
      [ "$(metric 'tpgate_reloads_total{result="applied"}')" -gt "$applied" ] && break
      sleep 0.1
    done
    [ "$(metric 'tpgate_reloads_total{result="applied"}')" -gt "$applied" ] ||
      { reloads_failed=$((reloads_failed + 1)); log "reload $n: not applied (see $work/tpgate.log)"; }
  fi
  provider_file "$n"
  refreshes=$((refreshes + 1))
  code=$(api PUT /providers/proxies/prov)
  case $code in 2??) ;; *) refreshes_failed=$((refreshes_failed + 1)); log "refresh $n: HTTP $code" ;; esac
  switches=$((switches + 1))
  code=$(api PUT /proxies/Sel "{\"name\":\"${members[$((n % ${#members[@]}))]}\"}")
  case $code in 2??) ;; *) switches_failed=$((switches_failed + 1)); log "switch $n: HTTP $code" ;; esac
}

t0=$SECONDS
samples=$((duration / interval))
next_op=$period
ops=0
sample 0
for i in $(seq "$samples"); do
  while [ $((SECONDS - t0)) -lt $((i * interval)) ]; do sleep 0.5; done
  t=$((SECONDS - t0))
  if [ "$t" -ge "$next_op" ] && [ "$t" -lt "$duration" ]; then
    ops=$((ops + 1))
    operate "$ops"
    next_op=$((next_op + period))
  fi
  sample "$t"
  [ $((i % (60 / interval > 0 ? 60 / interval : 1))) != 0 ] ||
    log "$t s: $(tail -n1 "$work/samples.tsv" | awk '{printf "RSS %.1f MiB, %d fds, %d tasks, %d NAT flows, %d flows, %d fake-ip", $2/1024, $3, $5, $6, $7, $8}')"
done

log "waiting for the load to finish"
for p in "${loads[@]}"; do wait "$p" || true; done
loads=()
if grep -qiE ' (WARN|ERROR) ' "$work/tpgate.log"; then
  log "tpgate logged warnings or errors:"
  grep -iE ' (WARN|ERROR) ' "$work/tpgate.log" | sed 's/^[^ ]* //' | sort | uniq -c | sort -rn |
    head -n 10 >&2
fi

# ---------------------------------------------------------------- summary and checks
flow_bound=$((2 * concurrency))
report_cfg=$(printf '{"minutes": %d, "duration": %d, "variant": "%s", "interval": %d, "window": %d, "period": %d,
  "warmup": %d, "names": %d, "concurrency": %d, "flow_bound": %d, "reloads": %d,
  "reloads_failed": %d, "switches": %d, "switches_failed": %d, "refreshes": %d,
  "refreshes_failed": %d}' "$minutes" "$duration" "$variant" "$interval" "$window" "$period" "$warmup" \
  "$dns_names" "$concurrency" "$flow_bound" "$reloads" "$reloads_failed" "$switches" \
  "$switches_failed" "$refreshes" "$refreshes_failed")
status=0
python3 "$load" report "$work" "$report_cfg" || status=$?
log "done in $((SECONDS - t0)) s; samples and logs in $work$([ "$status" = 0 ] && echo ' (removed: passed)')"
exit "$status"
