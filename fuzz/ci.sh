#!/usr/bin/env bash
# Continuous fuzzing, as CI runs it: every target for FUZZ_SECONDS (default 20) with
# libFuzzer, starting from the inputs kept in fuzz/corpus/TARGET/ (read only: what the run
# finds goes to fuzz/target/ci-corpus/, so the checkout stays as it was). A crash fails the
# run and prints the input and how to keep it as a regression test.
#
#   fuzz/ci.sh                     all targets, 20 s each
#   FUZZ_SECONDS=300 fuzz/ci.sh    longer, by hand
#   fuzz/ci.sh dns_reply socks5    some targets
#
# Needs the nightly toolchain (libFuzzer's instrumentation); without it this says so and
# exits 0: the targets still build, and every kept input still runs, on stable
# (`cargo test --manifest-path fuzz/Cargo.toml`). Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-20}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "SKIPPED fuzzing: no nightly toolchain here (rustup toolchain install nightly);"
  echo "  the kept corpus and regressions still ran on stable"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install --locked cargo-fuzz)"
  cargo install --locked cargo-fuzz
fi

# -a: debug assertions, so an arithmetic overflow is a crash too. AddressSanitizer (the
# default) watches the unsafe code of the dependencies.
flags=(-a)
cargo +nightly fuzz build "${flags[@]}"
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

failed=()
for t in "${targets[@]}"; do
  out=target/ci-corpus/$t
  rm -rf "artifacts/$t"
  mkdir -p "$out" "artifacts/$t"
  log=target/ci-corpus/$t.log
  start=$SECONDS
  # Targets without kept seeds yet start from what this run finds.
  dirs=("$out")
  if [ -d "corpus/$t" ]; then dirs+=("corpus/$t"); fi
  if cargo +nightly fuzz run "${flags[@]}" "$t" "${dirs[@]}" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1; then
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 || true)
    echo "fuzz $t: ok (${runs:-?} in $((SECONDS - start)) s)"
  else
    echo "fuzz $t: FAILED; the end of its log:"
    tail -40 "$log"
    for a in "artifacts/$t"/*; do
      [ -f "$a" ] || continue
      echo "input fuzz/$a ($(stat -c %s "$a") bytes), base64:"
      base64 -w 76 "$a" | head -40
    done
    echo "to keep it: fix the bug, then cp the input to fuzz/regressions/$t/<what-it-caught>"
    echo "(cargo test --manifest-path fuzz/Cargo.toml replays it from then on)"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]}"
  exit 1
fi
