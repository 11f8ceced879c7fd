#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short time (default 20 s each) from the
# seed corpus, failing on any crash. Installs cargo-fuzz if it is missing and
# uses the nightly toolchain when there is one, else RUSTC_BOOTSTRAP=1 with
# the stable one. Long campaigns: see fuzz/README.md.
set -euo pipefail
seconds=${1:-20}
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz > /dev/null || cargo install --locked cargo-fuzz
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz() { cargo +nightly fuzz "$@"; }
else
  fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi
./seed.sh > /dev/null
for target in $(fuzz list); do
  echo "fuzz $target: ${seconds}s"
  fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 2>&1 \
    | grep -E 'stat::number_of_executed_units|stat::peak_rss_mb|ERROR|panicked|Done' || true
  # libFuzzer exits non-zero on a crash; with pipefail off for grep, check artifacts.
  if ls "artifacts/$target"/crash-* "artifacts/$target"/oom-* "artifacts/$target"/timeout-* > /dev/null 2>&1; then
    echo "fuzz $target: found a failing input in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
