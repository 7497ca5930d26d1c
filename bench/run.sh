#!/usr/bin/env bash
# The benchmark suite: tpgate DIRECT next to plain kernel forwarding (the ceiling) and the
# transparent proxies Debian and crates.io offer, side by side in one run, in a throwaway lab
# of network namespaces:
#
#   client 198.51.100.2, .3 ── lan0 ─ gateway ─ wan0 203.0.113.1 ── server 203.0.113.2,
#   iperf3, wrk, bench tools       kernel | tpgate |                 192.0.2.2: iperf3 -s,
#                                  sing-box | v2ray |                nginx, bench sinks
#                                  sslocal | haproxy
#                                        └─ wan1 198.18.0.1 ── upstream 198.18.0.2 (SOCKS5)
#
# Every proxy gets the same interception: the nftables ruleset and policy routing that
# `tpgate plan` prints for the bench config (tpgate installs it itself, the peers get it
# applied by hand), TPROXY to port 7893, and every outbound socket carries mark 255.
#
# Cases (see bench/README.md for the method): TCP bulk (iperf3, 1 and 4 streams, up and
# down), short HTTP exchanges (wrk against nginx, Connection: close and keep-alive: requests/s
# and p50/p99 latency), UDP (iperf3 -u: the highest rate with < 1 % loss for 64-byte and
# 1400-byte datagrams, then the loss at half that rate), UDP flow churn (one-datagram flows
# from distinct source ports), the rule list (a mihomo-style list of 300 domain rules, 500
# DIRECT prefixes and MATCH to an upstream, run by tpgate, sing-box and v2ray: TCP bulk
# DIRECT by address and keep-alive HTTP by name through the upstream), memory and file
# descriptors of the gateway process holding BENCH_IDLE_CONNS idle TCP connections and after
# they close, and gateway CPU seconds per GB over the TCP bulk runs. BENCH_REPS rounds, each
# running every proxy in turn (the order rotates each round); the table shows medians. Every
# run checks, by nftables counters in the server namespace, that the server saw the traffic
# come from the intended place (the client for kernel forwarding and tpgate's offloaded
# ranges, the gateway's WAN address for a proxy, the upstream host for MATCH). A failure of
# tpgate or kernel forwarding stops the suite; a peer's failed case shows "—" with the
# reason in a note under the table, and the suite goes on.
#
# Everything lives in namespaces named tpgs-$$-* that are deleted on exit; the machine's own
# network namespace (firewall, routes, sysctls) is never touched.
#
# Usage: sudo bench/run.sh        (progress on stderr, machine description and table on stdout)
# Env:   BENCH_SECONDS      TCP bulk and HTTP run length, s (default 3)
#        BENCH_UDP_SECONDS  UDP run length, s (default 2)
#        BENCH_REPS         rounds (default 3)
#        BENCH_IDLE_CONNS   idle TCP connections for the memory case (default 10000; lowered
#                           with a note when the open-file hard limit is too small, for one
#                           proxy when its descriptors per connection do not fit its limit)
#        BENCH_CHURN_RATE   UDP churn flows offered per second (default 20000)
#        BENCH_WRK_CONNS    wrk concurrent connections (default 50)
#        BENCH_PROXIES      subset and order, default "kernel tpgate sing-box v2ray sslocal haproxy";
#                           tpgate-copy adds tpgate with TPGATE_SPLICE=0 (copying relay),
#                           tpgate-sockmap tpgate with TPGATE_SOCKMAP=1 (DIRECT joined in the kernel),
#                           tpgate-nooffload tpgate with offload-direct off (rule list only)
#        BENCH_CASES        subset of "bulk http udp rules memory" (default all; udp includes
#                           the churn)
#        BENCH_NO_MEMORY=1  skip the idle-connection case
#        BENCH_PERF=1       profile tpgate's 4-stream bulk runs (perf record -a -g) on stderr
#        TPGATE_BIN         tpgate binary to test (default: cargo build --release -p tpgate)
# Needs: apt-get (iperf3 nginx-light wrk v2ray haproxy nftables iproute2 python3), cargo
#        (shadowsocks-rust and bench/tools are built once into bench/.tools/), pip (sing-box).
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

secs=${BENCH_SECONDS:-3}
udp_secs=${BENCH_UDP_SECONDS:-2}
reps=${BENCH_REPS:-3}
idle_conns=${BENCH_IDLE_CONNS:-10000}
churn_rate=${BENCH_CHURN_RATE:-20000}
wrk_conns=${BENCH_WRK_CONNS:-50}
read -r -a proxies <<<"${BENCH_PROXIES:-kernel tpgate sing-box v2ray sslocal haproxy}"
read -r -a cases <<<"${BENCH_CASES:-bulk http udp rules memory}"
[ -z "${BENCH_NO_MEMORY:-}" ] || read -r -a cases <<<"${cases[*]/memory/}"
for c in "${cases[@]}"; do
  case $c in bulk | http | udp | rules | memory) ;; *) die "unknown case $c (BENCH_CASES)" ;; esac
done
want() { [[ " ${cases[*]} " == *" $1 "* ]]; }

require_root

# ---------------------------------------------------------------- limits
# Each idle connection costs a proxy two descriptors (client side, server side), each UDP
# flow one or two. Raise the soft limit as far as the hard one allows; where even that is
# too small, hold fewer connections and say so (the per-connection figures are divided by
# the number actually held).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
if [ "$nofile" != unlimited ] && [ $((2 * idle_conns + 1024)) -gt "$nofile" ]; then
  idle_conns=$(((nofile - 1024) / 2))
  log "note: the open-file limit is $nofile here; holding $idle_conns idle connections," \
    "not ${BENCH_IDLE_CONNS:-10000}"
fi
churn_flows=$((churn_rate * udp_secs))
if [ "$nofile" != unlimited ] && [ $((2 * churn_flows + 512)) -gt "$nofile" ]; then
  churn_flows=$(((nofile - 512) / 2))
  log "note: the open-file limit is $nofile here; UDP churn sends $churn_flows flows per run"
fi
[ "$churn_flows" -le 64000 ] || churn_flows=64000

# ---------------------------------------------------------------- tools
apt_install iperf3:iperf3 nginx:nginx-light wrk:wrk v2ray:v2ray haproxy:haproxy nft:nftables \
  ip:iproute2 python3:python3
[ -z "${BENCH_PERF:-}" ] || apt_install perf:linux-perf
# shadowsocks-rust takes minutes to build: only when sslocal is benchmarked.
case " ${proxies[*]} " in *" sslocal "*) install_shadowsocks ;; esac
sing_box=$(install_sing_box)
tool=$(build_bench_crate tools tpgate-bench-tool)
bin=$(tpgate_binary)

# ---------------------------------------------------------------- lab
id=$$
C=tpgs-$id-c G=tpgs-$id-g S=tpgs-$id-s U=tpgs-$id-u
work=$(mktemp -d /tmp/tpgs.XXXXXX)
chmod 0755 "$work"
results=$work/results.tsv
: >"$results"
pids=()        # long-lived servers, killed on exit
proxy=         # the proxy of the current case
proxy_pid=     # its process (empty for kernel forwarding)
peer_rules=    # whether the plan's interception was installed by hand for a peer
hold_pid=

stop_proxy() {
  if [ -n "$proxy_pid" ] && kill -0 "$proxy_pid" 2>/dev/null; then
    kill -TERM "$proxy_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$proxy_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$proxy_pid" 2>/dev/null || true
  fi
  [ -z "$proxy_pid" ] || wait "$proxy_pid" 2>/dev/null || true
  proxy_pid=
  if [ -n "$peer_rules" ]; then
    ip netns exec "$G" "$bin" down -c "$work/tpgate.yaml" >/dev/null 2>&1 || true
    ip netns exec "$G" nft delete table inet tpgs_mark 2>/dev/null || true
    peer_rules=
  fi
  flush_gateway_sockets
  proxy=
}

# A stopped proxy leaves TCP sockets in the gateway, above all the TIME_WAIT ones of the
# connections it closed toward the client (transparent, with the client's 4-tuple). A later
# case whose client reuses such a port is hurt by them: kernel forwarding drops the SYN
# (early demux finds the local socket, ip_forward refuses a packet with one), and under
# TPROXY the ruleset's `socket transparent` fast path delivers the SYN to the TIME_WAIT
# socket, which answers with an ACK instead of a SYN-ACK, costing a 1 s retransmission.
# So every case starts with none: they are destroyed (sock_diag), which needs a kernel that
# can destroy TIME_WAIT sockets; where it cannot, say so once.
tw_warned=
flush_gateway_sockets() {
  ip netns exec "$G" ss -K -t -a >/dev/null 2>&1 || true
  local left
  left=$(ip netns exec "$G" ss -Htan | wc -l)
  if [ "$left" -gt 0 ] && [ -z "$tw_warned" ]; then
    log "note: $left TCP sockets of the previous case remain in the gateway (this kernel cannot destroy them); a client port that hits one costs a retransmission"
    tw_warned=1
  fi
}

cleanup() {
  local status=$?
  set +e
  [ -z "$hold_pid" ] || kill -KILL "$hold_pid" 2>/dev/null
  stop_proxy
  # A peer's failed case points at its log: keep them.
  if [ "$status" = 0 ] && grep -q $'\t!' "$results" 2>/dev/null; then status=failed-peer; fi
  remove_lab "$status" "$C" "$G" "$S" "$U"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A private copy: a rebuild of the tree during the run must not swap the binary under it.
cp "$bin" "$work/tpgate"
bin=$work/tpgate

log "building the lab ($C $G $S $U)"
for ns in "$C" "$G" "$S" "$U"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
# Every veth is created inside the lab (never in the root namespace).
ip -n "$G" link add lan0 type veth peer name eth0 netns "$C"
ip -n "$G" link add wan0 type veth peer name eth0 netns "$S"
ip -n "$G" link add wan1 type veth peer name eth0 netns "$U"
ip -n "$C" link set eth0 up
ip -n "$S" link set eth0 up
ip -n "$G" link set lan0 up
ip -n "$G" link set wan0 up
ip -n "$G" link set wan1 up
ip -n "$U" link set eth0 up
ip -n "$C" addr add 198.51.100.2/24 dev eth0
ip -n "$C" addr add 198.51.100.3/24 dev eth0
ip -n "$G" addr add 198.51.100.1/24 dev lan0
ip -n "$G" addr add 203.0.113.1/24 dev wan0
ip -n "$S" addr add 203.0.113.2/24 dev eth0
ip -n "$C" route add default via 198.51.100.1
# The rule-list case: the upstream proxy on a second WAN host (198.18.0.2, the benchmarking
# range), and a second server address (192.0.2.2) that no DIRECT prefix covers.
ip -n "$G" addr add 198.18.0.1/24 dev wan1
ip -n "$U" addr add 198.18.0.2/24 dev eth0
ip -n "$U" route add default via 198.18.0.1
ip -n "$S" addr add 192.0.2.2/32 dev eth0
ip -n "$G" route add 192.0.2.0/24 via 203.0.113.2
# The server routes the LAN back through the gateway: flows the kernel forwards (kernel
# forwarding, tpgate's offloaded DIRECT ranges) keep the client's address.
ip -n "$S" route add 198.51.100.0/24 via 203.0.113.1
ip -n "$S" route add 198.18.0.0/24 via 203.0.113.1
ip netns exec "$G" sysctl -qw net.ipv4.ip_forward=1
for ns in "$C" "$G" "$S" "$U"; do
  # Short-connection runs open tens of thousands of connections: a wide port range, and
  # TIME_WAIT sockets reusable for new outgoing connections.
  ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1
  ip netns exec "$ns" sysctl -qw net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192
done

# Who the server saw: packets from the LAN (kernel forwarding keeps the client's address),
# from the gateway's WAN address (a proxy's own connections) and from the upstream host (the
# rule-list case's MATCH), counted on input.
ip netns exec "$S" nft -f - <<'EOF'
table ip tpgs_seen {
  counter lan {}
  counter gateway {}
  counter upstream {}
  chain input {
    type filter hook input priority filter; policy accept;
    ip saddr 198.51.100.0/24 counter name lan
    ip saddr 203.0.113.1 counter name gateway
    ip saddr 198.18.0.2 counter name upstream
  }
}
EOF

log "starting the servers (iperf3, nginx, the bench's TCP sink)"
ip netns exec "$S" iperf3 -s -B 203.0.113.2 >"$work/iperf3-server.log" 2>&1 &
pids+=($!)
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 203.0.113.2:80 backlog=8192;
    listen 192.0.2.2:80 backlog=8192;
    location / { return 200 "tpgate bench\n"; }
  }
}
EOF
ip netns exec "$S" nginx -e "$work/nginx/error.log" -c "$work/nginx.conf" >>"$work/nginx/error.log" 2>&1 &
pids+=($!)
ip netns exec "$S" "$tool" tcp-sink --bind 203.0.113.2:9001 >"$work/tcp-sink.out" 2>>"$work/tcp-sink.err" &
pids+=($!)
# The rule-list case's configs (one list for every proxy that runs it) and its upstream:
# sing-box as a SOCKS5 server on the second WAN host, resolving the web host's name itself.
python3 "$root_dir/bench/rulelist.py" "$work"
sed 's/^  offload-direct: true$/  offload-direct: false/' "$work/tpgate-rules.yaml" \
  >"$work/tpgate-rules-nooffload.yaml"
grep -q '^  offload-direct: false$' "$work/tpgate-rules-nooffload.yaml" || die "rulelist.py: no offload-direct line"
"$sing_box" check -c "$work/sing-box-rules.json" || die "sing-box refuses the rule-list config"
"$sing_box" check -c "$work/upstream.json" || die "sing-box refuses the upstream's config"
ip netns exec "$U" "$sing_box" run -c "$work/upstream.json" >"$work/upstream.log" 2>&1 &
pids+=($!)
retry accepting "$C" 203.0.113.2 5201
retry accepting "$C" 203.0.113.2 80
retry accepting "$C" 203.0.113.2 9001
retry accepting "$C" 192.0.2.2 80
retry accepting "$G" 198.18.0.2 1080

# ---------------------------------------------------------------- proxies
cat >"$work/tpgate.yaml" <<EOF
tproxy-port: 7893
routing-mark: 255
ipv6: false
log-level: warning
intercept:
  lan-interfaces: [lan0]
  local: false
  udp: true
sniffer:
  enable: false
# The memory case holds $idle_conns connections from one client: above the default caps.
limits:
  max-connections: 1000000
  per-source: 1000000
rules:
  - MATCH,DIRECT
EOF
ip netns exec "$G" "$bin" check -c "$work/tpgate.yaml" >&2
ip netns exec "$G" "$bin" check -c "$work/tpgate-rules.yaml" >&2

# sing-box: a tproxy inbound on the same interception as the other peers, everything to a
# direct outbound whose sockets carry mark 255.
cat >"$work/sing-box.json" <<'JSON'
{
  "log": {"level": "warn"},
  "inbounds": [
    {"type": "tproxy", "tag": "tproxy-in", "listen": "0.0.0.0", "listen_port": 7893}
  ],
  "outbounds": [
    {"type": "direct", "tag": "direct", "routing_mark": 255}
  ],
  "route": {"final": "direct"}
}
JSON

cat >"$work/v2ray.json" <<'EOF'
{
  "log": {"loglevel": "warning", "access": "none"},
  "inbounds": [{
    "listen": "0.0.0.0", "port": 7893, "protocol": "dokodemo-door",
    "settings": {"network": "tcp,udp", "followRedirect": true},
    "streamSettings": {"sockopt": {"tproxy": "tproxy"}}
  }],
  "outbounds": [{
    "protocol": "freedom", "settings": {"domainStrategy": "AsIs"},
    "streamSettings": {"sockopt": {"mark": 255}}
  }]
}
EOF

# sslocal needs a server even when its ACL sends everything around it: a dead address.
printf '[bypass_all]\n' >"$work/bypass.acl"

cat >"$work/haproxy.cfg" <<EOF
global
  # Room for the idle connections, not more: HAProxy wants 2 fds per connection plus 2 per
  # splice pipe within the open-file limit, or it refuses to start.
  maxconn $((idle_conns + 64))
  maxpipes 256
  user haproxy
  group haproxy
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
  # Splice in both directions, always: with splice-auto HAProxy 2.6 copied through user
  # space in this lab (recvfrom/sendto under strace), with these two it splices.
  option splice-request
  option splice-response
frontend tproxy
  bind 0.0.0.0:7893 transparent
  default_backend original
backend original
  # 0.0.0.0 and no port: connect to the connection's original destination.
  server original 0.0.0.0
EOF

ss_version=$("$tools/bin/sslocal" --version 2>/dev/null | awk '{print $2}' || true)
v2ray_version=$( (v2ray -version 2>/dev/null || v2ray version) | awk 'NR == 1 {print $2}')
haproxy_version=$(haproxy -v | awk 'NR == 1 {print $3}' | sed 's/-.*//')
sing_box_version=$("$sing_box" version | awk 'NR == 1 {print $3}')
tpgate_version=$("$bin" --version 2>/dev/null | awk '{print $NF}' || true)

proxy_label() {
  case $1 in
    kernel) echo "kernel forwarding" ;;
    tpgate) echo "tpgate${tpgate_version:+ $tpgate_version}" ;;
    tpgate-copy) echo "tpgate, no splice" ;;
    tpgate-sockmap) echo "tpgate, sockmap" ;;
    tpgate-nooffload) echo "tpgate, offload off" ;;
    v2ray) echo "v2ray $v2ray_version" ;;
    sing-box) echo "sing-box $sing_box_version" ;;
    sslocal) echo "sslocal $ss_version" ;;
    haproxy) echo "HAProxy $haproxy_version" ;;
  esac
}
has_udp() { [ "$1" != haproxy ]; }
# Proxies with a rule engine that can run the rule-list case.
has_rules() { case $1 in tpgate | tpgate-copy | tpgate-sockmap | tpgate-nooffload | sing-box | v2ray) ;; *) return 1 ;; esac; }
# tpgate-nooffload differs from tpgate only where a rule sends ranges DIRECT by address,
# which the standard cases (MATCH,DIRECT) never do: it runs the rule-list case only.
has_std() { [ "$1" != tpgate-nooffload ]; }

# Waits until the gateway listens on port 7893 (TCP, and UDP when $1 = udp), with the
# interception in place. Fails (a peer: returns 1, see fail) when it does not.
wait_ready() {
  local want_udp=$1 logf=$2
  for _ in $(seq 150); do
    if ip netns exec "$G" ss -Htln 'sport = :7893' | grep -q . &&
      { [ "$want_udp" != udp ] || ip netns exec "$G" ss -Huln 'sport = :7893' | grep -q .; } &&
      ip netns exec "$G" nft list table inet tpgate >/dev/null 2>&1 &&
      ip -n "$G" rule show | grep -q 'lookup 100'; then
      return 0
    fi
    kill -0 "$proxy_pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$logf" >&2
  fail "$proxy did not start (see $logf)"
  return 1
}

# Mark 255 on the peers' outbound sockets: v2ray and sslocal set SO_MARK themselves; HAProxy
# 2.6 can mark only the client side (set-mark), so its server-side packets get the same
# mark from nftables, by its user, before routing.
mark_haproxy_output() {
  ip netns exec "$G" nft -f - <<'EOF'
table inet tpgs_mark {
  chain output {
    type route hook output priority mangle; policy accept;
    meta skuid "haproxy" ct direction original meta mark set 255
  }
}
EOF
}

# Starts proxy $1 with its config for the cases $2: std (everything DIRECT, the default) or
# rules (the rule-list case). Every process inherits the script's open-file limit, raised
# to the hard limit above (Go programs, sing-box and v2ray, raise theirs to it themselves).
# Returns 1 when a peer did not come up (tpgate's failure stops the suite).
start_proxy() {
  proxy=$1
  local set=${2:-std} sfx=
  [ "$set" = std ] || sfx=-rules
  case $proxy in
    kernel) proxy_pid= ;;
    tpgate | tpgate-copy | tpgate-sockmap | tpgate-nooffload)
      # tpgate-sockmap: DIRECT flows joined in the kernel (TPGATE_SOCKMAP=1). tpgate-copy
      # (not in the default set): DIRECT relayed through user-space buffers
      # instead of splice(2), to tell the relay's share of a difference. tpgate-nooffload
      # (not in the default set either): the rule list with offload-direct off.
      local cfg=$work/tpgate$sfx.yaml
      [ "$proxy" != tpgate-nooffload ] || cfg=$work/tpgate-rules-nooffload.yaml
      ip netns exec "$G" env NO_COLOR=1 TPGATE_SPLICE="$([ "$proxy" = tpgate-copy ] && echo 0 || echo 1)" \
        TPGATE_SOCKMAP="$([ "$proxy" = tpgate-sockmap ] && echo 1 || echo 0)" \
        "$bin" run -c "$cfg" >>"$work/tpgate.log" 2>&1 &
      proxy_pid=$!
      wait_ready udp "$work/tpgate.log"
      ;;
    v2ray)
      install_plan "$G" "$bin" "$work/tpgate.yaml"
      peer_rules=1
      ip netns exec "$G" v2ray -config "$work/v2ray$sfx.json" >>"$work/v2ray.log" 2>&1 &
      proxy_pid=$!
      wait_ready udp "$work/v2ray.log"
      ;;
    sing-box)
      install_plan "$G" "$bin" "$work/tpgate.yaml"
      peer_rules=1
      ip netns exec "$G" "$sing_box" run -c "$work/sing-box$sfx.json" >>"$work/sing-box.log" 2>&1 &
      proxy_pid=$!
      wait_ready udp "$work/sing-box.log"
      ;;
    sslocal)
      install_plan "$G" "$bin" "$work/tpgate.yaml"
      peer_rules=1
      ip netns exec "$G" "$tools/bin/sslocal" -b 0.0.0.0:7893 --protocol redir -U \
        --tcp-redir tproxy --udp-redir tproxy -s 203.0.113.9:8388 -m aes-128-gcm \
        -k tpgate-bench --acl "$work/bypass.acl" --outbound-fwmark 255 \
        >>"$work/sslocal.log" 2>&1 &
      proxy_pid=$!
      wait_ready udp "$work/sslocal.log"
      ;;
    haproxy)
      install_plan "$G" "$bin" "$work/tpgate.yaml"
      peer_rules=1
      mark_haproxy_output
      ip netns exec "$G" haproxy -db -f "$work/haproxy.cfg" >>"$work/haproxy.log" 2>&1 &
      proxy_pid=$!
      wait_ready tcp "$work/haproxy.log"
      ;;
    *) die "unknown proxy $proxy (BENCH_PROXIES)" ;;
  esac
}

# ---------------------------------------------------------------- measuring
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; }
# A line under the table (report.py prints each distinct one once).
note() { log "note: $1"; record note "${2:-}" "$1"; }

# A case that cannot give a number. For tpgate (and kernel forwarding, the ceiling every
# ratio needs) that stops the suite, as a wrong path does. For a peer, its rows get "—" in
# the table, the reason goes to stderr and into a note under the table, and the suite goes
# on; fail returns 0 then, and the case returns at once. Helpers that find a failure call
# fail and return 1, and their callers `|| return 0`.
case_what=   # the case being run, for the messages
case_rows=() # the rows it fills
round_what=  # "round N" or "memory case"
fail() {
  local why row
  why=$(tr '\t\n' '  ' <<<"$*" | sed 's/ *$//' | cut -c1-300)
  case $proxy in kernel | tpgate | tpgate-*) die "$proxy, $case_what: $why" ;; esac
  log "  $proxy, $case_what: FAILED: $why (its rows show —; the suite goes on)"
  for row in "${case_rows[@]}"; do record "$row" "$proxy" "!$round_what, $case_what: $why"; done
}
# Names the case about to run and the rows it fills; returns 1 (after fail) when the
# proxy is no longer running.
begin_case() {
  case_what=$1
  shift
  case_rows=("$@")
  if [ -n "$proxy_pid" ] && ! kill -0 "$proxy_pid" 2>/dev/null; then
    fail "$proxy is no longer running (see its log in $work)"
    return 1
  fi
}

seen_reset() { ip netns exec "$S" nft reset counters table ip tpgs_seen >/dev/null; }
# Checks that the server saw traffic only from where it should: $1 = lan (the client's own
# address), gateway (203.0.113.1) or upstream (198.18.0.2); by default the LAN for kernel
# forwarding and the gateway for a proxy. Anything else fails the case.
seen_check() {
  local want=${1:-} out c n ok=1 seen=()
  if [ -z "$want" ]; then
    if [ "$proxy" = kernel ]; then want=lan; else want=gateway; fi
  fi
  out=$(ip netns exec "$S" nft list counters table ip tpgs_seen)
  for c in lan gateway upstream; do
    n=$(awk -v c="counter $c " 'index($0, c) {f = 1} f && /packets/ {print $2; exit}' <<<"$out")
    seen+=("$c ${n:-?}")
    if [ "$c" = "$want" ]; then
      [ "${n:-0}" -gt 0 ] || ok=
    else
      [ "${n:-1}" = 0 ] || ok=
    fi
  done
  [ -z "$ok" ] || return 0
  fail "the server saw these packets: ${seen[*]}; for $proxy it must see them only from the $want: the traffic did not go the intended way"
  return 1
}

# CPU time of the proxy (user + system, all threads), in clock ticks.
cpu_ticks() {
  [ -n "$proxy_pid" ] || { echo 0; return; }
  awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$proxy_pid/stat"
}
# Bytes through the gateway's LAN interface, both directions.
lan_bytes() {
  ip netns exec "$G" cat /sys/class/net/lan0/statistics/rx_bytes /sys/class/net/lan0/statistics/tx_bytes |
    awk '{s += $1} END {printf "%.0f\n", s}'
}
# CPU time of the whole machine (every process, softirq and kernel workers: where a relay
# that leaves user space does its work), in clock ticks.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
declare -A cpu_sum bytes_sum mcpu_sum
clk_tck=$(getconf CLK_TCK)

# BENCH_PERF=1: where the machine's CPU went during tpgate's 4-stream runs (perf record of
# every CPU with call graphs), by command and by function, on stderr; the data stays in
# $work until the suite ends.
perf_summary() {
  log "  profile of $2 (share of all samples on both CPUs):"
  { perf report -i "$1" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 8 >&2; } || true
  { perf report -i "$1" --no-children --sort comm,dso,sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -n 25 >&2; } || true
}

json_get() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

# TCP bulk: iperf3 with $1 streams, $2 = up (client -> server) or down (-R); $3 prefixes
# the row (rl_ for the rule-list case), $4 is where the server must see it come from.
run_bulk() {
  local n=$1 dir=$2 pre=${3:-} want=${4:-} json=$work/iperf.json t0 t1 b0 b1 m0 m1 gbps flags=()
  begin_case "${pre:+rule list, }TCP ×$n $dir" "${pre}tcp${n}_$dir" || return 0
  [ "$dir" = up ] || flags=(-R)
  seen_reset
  local perf_data= perf_pid=
  if [ -n "${BENCH_PERF:-}" ] && [[ $proxy == tpgate* ]] && [ "$n" = 4 ]; then
    perf_data=$work/perf-$proxy-$pre$n-$dir.data
    perf record -a -g -o "$perf_data" -- sleep "$secs" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  t0=$(cpu_ticks) b0=$(lan_bytes) m0=$(machine_ticks)
  if ! timeout $((secs + 20)) ip netns exec "$C" iperf3 -c 203.0.113.2 -t "$secs" -P "$n" \
    "${flags[@]}" -J --connect-timeout 3000 >"$json" 2>&1; then
    fail "iperf3 -P $n $dir failed: $(json_get "$json" 'd.get("error", "?")' 2>/dev/null || head -c 300 "$json")"
    return 0
  fi
  t1=$(cpu_ticks) b1=$(lan_bytes) m1=$(machine_ticks)
  [ -z "$perf_pid" ] || { wait "$perf_pid"; perf_summary "$perf_data" "$proxy: ${pre:+rule list: }TCP ×$n $dir"; }
  seen_check "$want" || return 0
  gbps=$(json_get "$json" '"%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9)')
  record "${pre}tcp${n}_$dir" "$proxy" "$gbps"
  cpu_sum[$pre$proxy]=$(( ${cpu_sum[$pre$proxy]:-0} + t1 - t0 ))
  bytes_sum[$pre$proxy]=$(( ${bytes_sum[$pre$proxy]:-0} + b1 - b0 ))
  mcpu_sum[$pre$proxy]=$(( ${mcpu_sum[$pre$proxy]:-0} + m1 - m0 ))
  log "  $proxy: ${pre:+rule list: }TCP ×$n $dir $gbps Gbit/s"
}

# Short HTTP exchanges with wrk; $1 = close (a new connection per request) or keepalive.
# The rule-list case: $2 = rl_ (the rows' prefix), $3 the URL, $4 the Host header, $5 where
# the server must see it come from.
run_http() {
  local mode=$1 pre=${2:-} url=${3:-http://203.0.113.2/} host=${4:-} want=${5:-} out hdr=() parsed
  local key=${pre}http_$mode
  begin_case "${pre:+rule list, }HTTP $mode" "${key}_rps" "${key}_p50" "${key}_p99" "${key}_errors" ||
    return 0
  [ "$mode" = keepalive ] || hdr=(-H 'Connection: close')
  [ -z "$host" ] || hdr+=(-H "Host: $host")
  seen_reset
  if ! out=$(timeout $((secs + 30)) ip netns exec "$C" wrk -t1 -c"$wrk_conns" -d"${secs}s" --latency \
    "${hdr[@]}" "$url" 2>&1); then
    fail "wrk ($mode) failed: $out"
    return 0
  fi
  seen_check "$want" || return 0
  # requests/s, p50 and p99 in ms, socket errors, non-2xx responses
  if ! parsed=$(python3 - "$out" <<'EOF'
import re, sys
text = sys.argv[1]
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    n, u = float(m.group(1)), m.group(2)
    return n * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(re.search(r"\n\s+50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"\n\s+99%\s+(\S+)", text).group(1))
errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print("%.1f %.3f %.3f %d %d" % (rps, p50, p99, errs, int(non2xx.group(1)) if non2xx else 0))
EOF
  ); then
    fail "cannot read wrk's output: $out"
    return 0
  fi
  read -r rps p50 p99 errs non2xx <<<"$parsed"
  if [ "$non2xx" != 0 ]; then
    fail "$non2xx responses were not 2xx"
    return 0
  fi
  record "${key}_rps" "$proxy" "$rps"
  record "${key}_p50" "$proxy" "$p50"
  record "${key}_p99" "$proxy" "$p99"
  record "${key}_errors" "$proxy" "$errs"
  log "  $proxy: ${pre:+rule list: }HTTP $mode $rps req/s, p50 $p50 ms, p99 $p99 ms, socket errors $errs"
}

# One UDP iperf3 run of $1-byte datagrams at $2 datagrams/s (0 = as fast as the client can);
# sets u_sent and u_recv (datagrams/s) and u_loss (%).
udp_iperf() {
  local size=$1 pps=$2 json=$work/iperf-udp.json bw
  bw=$(awk -v p="$pps" -v s="$size" 'BEGIN { printf "%d", p * s * 8 }')
  if ! timeout $((udp_secs + 20)) ip netns exec "$C" iperf3 -c 203.0.113.2 -u -l "$size" -b "$bw" \
    -t "$udp_secs" -J --connect-timeout 3000 >"$json" 2>&1; then
    fail "iperf3 -u -l $size failed: $(json_get "$json" 'd.get("error", "?")' 2>/dev/null || head -c 300 "$json")"
    return 1
  fi
  local got
  if ! got=$(json_get "$json" \
    '"%.0f %.0f %.3f" % ((lambda t, r: (t["packets"] / t["seconds"], (r["packets"] - r["lost_packets"]) / r["seconds"], r["lost_percent"]))(d["end"]["sum_sent"], d["end"]["sum_received"]))'); then
    fail "cannot read iperf3's UDP result ($json)"
    return 1
  fi
  read -r u_sent u_recv u_loss <<<"$got"
}

# UDP capacity for $1-byte datagrams: the highest offered rate with < 1 % loss. An
# unlimited run shows what the path delivers overloaded (if it lost < 1 %, the sender is the
# limit and that is the answer); the search starts at 0.95 × that and steps up by 15 % after
# a run that passed, down to min(0.8 × offered, 0.95 × delivered) after one that failed,
# until the outcome flips (at most 6 runs, or until the client cannot send what is
# offered). Later rounds first try 2 runs from the rate the round before found, and fall
# back to the full search when neither passed. The best passing run's received rate is the
# result. Then one run at half that rate tells whether anything is lost below saturation.
declare -A udp_seed
udp_passed() { awk -v l="$u_loss" 'BEGIN { exit !(l < 1) }'; }
# Searches from rate $2 with at most $3 runs; sets s_best (0 when no run passed).
udp_search() {
  local size=$1 rate=$2 max=$3 tries=0 prev='' now
  s_best=0
  while [ "$tries" -lt "$max" ] && [ "$rate" -gt 100 ]; do
    tries=$((tries + 1))
    udp_iperf "$size" "$rate" || return 1
    if udp_passed; then now=pass; else now=fail; fi
    log "  $proxy: UDP $size B at $rate/s: received $u_recv/s, loss $u_loss % ($now)"
    if [ "$now" = pass ] && [ "$u_recv" -gt "$s_best" ]; then s_best=$u_recv; fi
    [ -z "$prev" ] || [ "$prev" = "$now" ] || break
    # Offering more than the client can send proves nothing: stop there.
    if [ "$now" = pass ] && awk -v s="$u_sent" -v r="$rate" 'BEGIN { exit !(s < 0.95 * r) }'; then
      log "  $proxy: UDP $size B: the client sends at most $u_sent/s; that is the limit here"
      break
    fi
    prev=$now
    if [ "$now" = pass ]; then
      rate=$(awk -v r="$rate" 'BEGIN { printf "%d", r * 1.15 }')
    else
      rate=$(awk -v r="$rate" -v g="$u_recv" 'BEGIN { a = r * 0.8; b = g * 0.95; printf "%d", (a < b ? a : b) }')
    fi
  done
}
run_udp() {
  local size=$1 best half_loss="" seed=${udp_seed[$proxy:$1]:-}
  begin_case "UDP $size B" "udp${size}_pps" "udp${size}_mbps" "udp${size}_halfloss" || return 0
  seen_reset
  s_best=0
  [ -z "$seed" ] || udp_search "$size" "$seed" 2 || return 0
  if [ "$s_best" = 0 ]; then
    udp_iperf "$size" 0 || return 0
    log "  $proxy: UDP $size B unlimited: sent $u_sent/s, received $u_recv/s, loss $u_loss %"
    if udp_passed; then
      s_best=$u_recv
    else
      udp_search "$size" "$(awk -v r="$u_recv" 'BEGIN { printf "%d", r * 0.95 }')" 6 || return 0
    fi
  fi
  best=$s_best
  if [ "$best" -gt 0 ]; then
    udp_seed[$proxy:$size]=$best
    udp_iperf "$size" $((best / 2)) || return 0
    half_loss=$u_loss
    log "  $proxy: UDP $size B at half that ($((best / 2))/s): loss $u_loss %"
  fi
  seen_check || return 0
  record "udp${size}_pps" "$proxy" "$best"
  record "udp${size}_mbps" "$proxy" "$(awk -v b="$best" -v s="$size" 'BEGIN { printf "%.1f", b * s * 8 / 1e6 }')"
  [ -z "$half_loss" ] || record "udp${size}_halfloss" "$proxy" "$half_loss"
}

# UDP flow churn: churn_flows one-datagram flows at churn_rate/s, each from its own source
# port of 198.51.100.3; the sink counts what arrives.
run_churn() {
  local sink_pid out sent secs_sent packets sources
  begin_case "UDP churn" churn_pct churn_fps || return 0
  ip netns exec "$S" "$tool" udp-sink --bind 203.0.113.2:9000 --idle-ms 1500 --wait-s 15 \
    >"$work/udp-sink.out" 2>"$work/udp-sink.err" &
  sink_pid=$!
  for _ in $(seq 50); do grep -q listening "$work/udp-sink.err" && break; sleep 0.1; done
  seen_reset
  if ! out=$(ip netns exec "$C" "$tool" udp-churn --to 203.0.113.2:9000 --from 198.51.100.3 \
    --flows "$churn_flows" --rate "$churn_rate" --first-port 1025); then
    kill -TERM "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
    fail "udp-churn failed"
    return 0
  fi
  if ! wait "$sink_pid"; then
    fail "the UDP sink failed: $(cat "$work/udp-sink.err")"
    return 0
  fi
  sent=$(sed -n 's/.*sent=\([0-9]*\).*/\1/p' <<<"$out")
  secs_sent=$(sed -n 's/.*secs=\([0-9.]*\).*/\1/p' <<<"$out")
  packets=$(sed -n 's/.*packets=\([0-9]*\).*/\1/p' "$work/udp-sink.out")
  sources=$(sed -n 's/.*sources=\([0-9]*\).*/\1/p' "$work/udp-sink.out")
  if [ "${packets:-0}" = 0 ]; then
    fail "nothing arrived ($out)"
    return 0
  fi
  seen_check || return 0
  record churn_pct "$proxy" "$(awk -v p="$packets" -v s="$sent" 'BEGIN { printf "%.1f", 100 * p / s }')"
  record churn_fps "$proxy" "$(awk -v p="$packets" -v t="$secs_sent" 'BEGIN { printf "%.0f", p / t }')"
  log "  $proxy: UDP churn: $sent flows sent in $secs_sent s, $packets datagrams from $sources sources arrived"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$proxy_pid/status"; }
fd_count() { find "/proc/$proxy_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
sink_open() { tail -n 1 "$work/tcp-sink.out" | sed -n 's/^open=\([0-9]*\).*/\1/p'; }
# Waits (at most $2 s) until the TCP sink holds exactly $1 connections.
wait_sink_open() {
  local want=$1
  for _ in $(seq $(($2 * 10))); do
    [ "$(sink_open)" = "$want" ] && return 0
    sleep 0.1
  done
  return 1
}
# Opens $1 idle connections through the gateway (background, pid in hold_pid) and waits
# until they all reach the server; returns 1 (after fail) when they do not.
hold_open() {
  : >"$work/hold.out"
  ip netns exec "$C" "$tool" tcp-hold --to 203.0.113.2:9001 --count "$1" >"$work/hold.out" \
    2>"$work/hold.err" &
  hold_pid=$!
  for _ in $(seq 1200); do grep -q '^held=' "$work/hold.out" && break; sleep 0.1; done
  if ! grep -q "^held=$1 failed=0" "$work/hold.out"; then
    fail "could not open $1 connections: $(cat "$work/hold.out" "$work/hold.err")"
    return 1
  fi
  if ! wait_sink_open "$1" 60; then
    fail "only $(sink_open) of $1 connections reached the server"
    return 1
  fi
}
hold_close() {
  kill -TERM "$hold_pid" 2>/dev/null || true
  wait "$hold_pid" || true
  hold_pid=
  if ! wait_sink_open 0 60; then
    fail "$(sink_open) connections still open at the server after close"
    return 1
  fi
}
# After a failed memory case: the held connections and the proxy go.
memory_abort() {
  if [ -n "$hold_pid" ]; then
    kill -KILL "$hold_pid" 2>/dev/null || true
    wait "$hold_pid" 2>/dev/null || true
    hold_pid=
  fi
  stop_proxy
}

# Memory: a fresh proxy, 200 connections opened and closed to warm it up, then the baseline;
# idle_conns connections held (fewer when the proxy's descriptors per connection, counted
# with the 200 open, would not fit in its open-file limit: sing-box holds 6, two sockets
# and a splice pipe per direction); then all closed again.
run_memory() {
  local base_rss base_fd with_rss with_fd after_rss after_fd fresh_fd warm_fd limit fit
  local n=$idle_conns
  proxy=$1
  begin_case "idle connections" mem_base_kib mem_with_kib mem_per_conn_kib fd_per_conn \
    mem_after_kib fd_after idle_held
  start_proxy "$1" || { memory_abort; return 0; }
  seen_reset
  fresh_fd=$(fd_count)
  hold_open 200 || { memory_abort; return 0; }
  warm_fd=$(fd_count)
  hold_close || { memory_abort; return 0; }
  sleep 1
  base_rss=$(rss_kib) base_fd=$(fd_count)
  limit=$(awk '/^Max open files/ {print $4}' "/proc/$proxy_pid/limits")
  if [ "$limit" != unlimited ] && [ "$warm_fd" -gt "$fresh_fd" ]; then
    fit=$(((limit - base_fd - 256) * 200 / (warm_fd - fresh_fd)))
    if [ "$fit" -lt "$n" ]; then
      n=$fit
      note "$(proxy_label "$proxy") held $n idle connections, not $idle_conns: it uses $(awk -v d=$((warm_fd - fresh_fd)) 'BEGIN { printf "%.1f", d / 200 }') descriptors per connection, and its open-file limit is $limit (the per-connection rows divide by the number held)" "$proxy"
    fi
  fi
  hold_open "$n" || { memory_abort; return 0; }
  sleep 1
  with_rss=$(rss_kib) with_fd=$(fd_count)
  hold_close || { memory_abort; return 0; }
  # Give the proxy a moment to notice the closes and free what it held.
  for _ in $(seq 100); do [ "$(fd_count)" -le $((base_fd + 2)) ] && break; sleep 0.1; done
  sleep 2
  after_rss=$(rss_kib) after_fd=$(fd_count)
  seen_check || { memory_abort; return 0; }
  record idle_held "$proxy" "$n"
  record mem_base_kib "$proxy" "$base_rss"
  record mem_with_kib "$proxy" "$with_rss"
  record mem_per_conn_kib "$proxy" "$(awk -v a="$with_rss" -v b="$base_rss" -v n="$n" 'BEGIN { printf "%.2f", (a - b) / n }')"
  record fd_per_conn "$proxy" "$(awk -v a="$with_fd" -v b="$base_fd" -v n="$n" 'BEGIN { printf "%.2f", (a - b) / n }')"
  record mem_after_kib "$proxy" "$((after_rss - base_rss))"
  record fd_after "$proxy" "$((after_fd - base_fd))"
  log "  $proxy: idle: RSS $base_rss -> $with_rss -> $after_rss KiB, fds $base_fd -> $with_fd -> $after_fd ($n connections; open-file limit $limit)"
  stop_proxy
}

# The rule-list case (rulelist.py): the proxy started with the list; TCP bulk to
# 203.0.113.2, DIRECT by address, then keep-alive HTTP by name (Host www.bench-upstream.test)
# to 192.0.2.2, which only MATCH decides: through the upstream on 198.18.0.2. Bulk is seen
# from the gateway, unless tpgate put the server's range in its offload set: then the
# kernel forwards those flows and the server sees the client itself.
rl_rows=(rl_tcp1_up rl_tcp1_down rl_tcp4_up rl_tcp4_down rl_http_keepalive_rps
  rl_http_keepalive_p50 rl_http_keepalive_p99 rl_http_keepalive_errors)
run_rules() {
  local want=gateway streams dir
  proxy=$1
  begin_case "rule list" "${rl_rows[@]}"
  start_proxy "$1" rules || { stop_proxy; return 0; }
  if [[ $proxy == tpgate* ]] &&
    ip netns exec "$G" nft get element inet tpgate direct4 '{ 203.0.113.2 }' >/dev/null 2>&1; then
    want=lan
  fi
  log "  $proxy: rule list: the bulk flows must come from the $want"
  for streams in 1 4; do
    for dir in up down; do
      run_bulk "$streams" "$dir" rl_ "$want"
    done
  done
  run_http keepalive rl_ http://192.0.2.2/ www.bench-upstream.test upstream
  stop_proxy
}

# The rows a round of the standard cases fills for proxy $1 (all "—" when it does not start).
std_rows() {
  local rows=()
  ! want bulk || rows+=(tcp1_up tcp1_down tcp4_up tcp4_down)
  ! want http || rows+=(http_{close,keepalive}_{rps,p50,p99,errors})
  if want udp && has_udp "$1"; then
    rows+=(udp64_pps udp64_mbps udp64_halfloss udp1400_pps udp1400_mbps udp1400_halfloss churn_pct churn_fps)
  fi
  echo "${rows[@]}"
}

# ---------------------------------------------------------------- run
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
start=$SECONDS
n_prox=${#proxies[@]}
if want rules; then
  # What tpgate's plan makes of the list: which ranges go to the kernel, and why not more.
  # (The line naming the rule where the scan stopped goes to stderr.)
  note "rule list, tpgate's plan: $(ip netns exec "$G" "$bin" plan -c "$work/tpgate-rules.yaml" 2>&1 |
    awk '/^# offload-direct/ {f = 1; next} /^# rules from #/ {sub(/^# */, ""); r = $0; next}
      f && /^#/ {sub(/^# */, ""); printf "%s%s", s, $0; s = "; "; next} {f = 0}
      END {if (r != "") printf "%s%s", s, r}')"
  no_rules=()
  for p in "${proxies[@]}"; do has_rules "$p" || no_rules+=("$(proxy_label "$p")"); done
  [ ${#no_rules[@]} = 0 ] ||
    note "rule list: not run for $(printf '%s, ' "${no_rules[@]}" | sed 's/, $//') (no rule engine that routes by name and address to an upstream)"
fi
for rep in $(seq "$reps"); do
  round_what="round $rep"
  for k in $(seq 0 $((n_prox - 1))); do
    p=${proxies[$(((k + rep - 1) % n_prox))]}
    if { has_std "$p" && [ -n "$(std_rows "$p")" ]; } || { want rules && has_rules "$p"; }; then
      log "[round $rep/$reps, $((SECONDS - start)) s] $(proxy_label "$p")"
    fi
    if has_std "$p" && [ -n "$(std_rows "$p")" ]; then
      proxy=$p
      read -r -a rows <<<"$(std_rows "$p")"
      begin_case "start" "${rows[@]}"
      if start_proxy "$p"; then
        if want bulk; then
          for streams in 1 4; do
            run_bulk "$streams" up
            run_bulk "$streams" down
          done
        fi
        if want http; then
          run_http close
          run_http keepalive
        fi
        if want udp && has_udp "$p"; then
          run_udp 64
          run_udp 1400
          run_churn
        fi
      fi
      stop_proxy
    fi
    if want rules && has_rules "$p"; then
      run_rules "$p"
    fi
  done
done
if want memory; then
  round_what="memory case"
  for p in "${proxies[@]}"; do
    if [ "$p" = kernel ] || ! has_std "$p"; then continue; fi
    log "[memory, $((SECONDS - start)) s] $(proxy_label "$p"): $idle_conns idle TCP connections"
    run_memory "$p"
  done
fi
# A case that did not run must not pass unnoticed (bash abandons a loop on some errors):
# every round of every case left a number or a failure.
rounds_of() { awk -F'\t' -v r="$1" -v p="$2" '$1 == r && $2 == p' "$results" | wc -l; }
for p in "${proxies[@]}"; do
  checks=()
  if has_std "$p"; then
    ! want bulk || checks+=("tcp1_up $reps")
    ! want http || checks+=("http_keepalive_rps $reps")
    if want udp && has_udp "$p"; then checks+=("churn_pct $reps"); fi
    if want memory && [ "$p" != kernel ]; then checks+=("idle_held 1"); fi
  fi
  if want rules && has_rules "$p"; then checks+=("rl_http_keepalive_rps $reps"); fi
  for c in "${checks[@]}"; do
    read -r row n <<<"$c"
    got=$(rounds_of "$row" "$p")
    [ "$got" = "$n" ] || die "$p: $row: $got of $n runs completed"
  done
done
for pre in "" rl_; do
  for p in "${proxies[@]}"; do
    [ "${bytes_sum[$pre$p]:-0}" != 0 ] || continue
    record "${pre}machine_cpu_per_gb" "$p" "$(awk -v t="${mcpu_sum[$pre$p]}" -v h="$clk_tck" -v b="${bytes_sum[$pre$p]}" 'BEGIN { printf "%.3f", t / h / (b / 1e9) }')"
    [ "$p" != kernel ] || continue
    record "${pre}cpu_per_gb" "$p" "$(awk -v t="${cpu_sum[$pre$p]}" -v h="$clk_tck" -v b="${bytes_sum[$pre$p]}" 'BEGIN { printf "%.3f", t / h / (b / 1e9) }')"
  done
done
elapsed=$((SECONDS - start))

if [ -s "$work/tpgate.log" ] && grep -qiE '(WARN|ERROR)' "$work/tpgate.log"; then
  log "tpgate logged warnings or errors:"
  grep -iE '(WARN|ERROR)' "$work/tpgate.log" | sed 's/^[^ ]* //' | sort | uniq -c | sort -rn | head -n 20 >&2
fi

# ---------------------------------------------------------------- report
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
echo "Machine: $(nproc) CPUs ($cpu), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r);" \
  "$(date -u '+%Y-%m-%d %H:%M UTC'); 1/5/15-min load average $load_start at the start," \
  "$(cut -d' ' -f1-3 /proc/loadavg) at the end."
echo "Tools: iperf3 $(iperf3 --version | awk 'NR == 1 {print $2}'), wrk $(wrk -v 2>&1 | awk 'NR == 1 {print $2}')," \
  "nginx $(nginx -v 2>&1 | sed 's|.*/||'), tpgate $("$bin" --version 2>/dev/null | awk '{print $NF}')" \
  "(${TPGATE_BIN:-built from $(git -C "$root_dir" rev-parse --short HEAD 2>/dev/null || echo '?')})," \
  "sing-box $sing_box_version, v2ray $v2ray_version, shadowsocks-rust ${ss_version:-(not built)}, HAProxy $haproxy_version."
echo "Runs: $reps interleaved rounds, medians; TCP and HTTP ${secs} s per run," \
  "UDP ${udp_secs} s per run; wrk 1 thread, $wrk_conns connections; UDP churn $churn_flows flows" \
  "at $churn_rate/s; $idle_conns idle TCP connections; suite $elapsed s."
echo
labels=()
for p in "${proxies[@]}"; do labels+=("$p=$(proxy_label "$p")"); done
python3 "$root_dir/bench/report.py" "$results" "${labels[@]}"
log "done in $elapsed s"
