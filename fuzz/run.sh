#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (issue 7).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all four)
#
# Needs cargo-fuzz (installed here if missing) and a nightly toolchain;
# without nightly, RUSTC_BOOTSTRAP=1 lets the stable compiler take the
# sanitizer flags. A crash stops that target, is copied to
# fuzz/regressions/<target>/ (replayed by tests/fuzz_regressions.rs from
# then on) and makes the script exit 1. Corpora stay in fuzz/corpus/
# (ignored by git) so later runs start where earlier ones stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(command_parser data_reader server_session client_session)

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  # Only this run's crashes are copied below.
  rm -rf "fuzz/artifacts/$t"
  echo "== $t: ${secs}s" >&2
  log=$(mktemp)
  # New inputs go to fuzz/corpus/ (the first directory); the committed
  # seeds in fuzz/seeds/ are read.
  if cargo "${toolchain[@]}" fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+.*DONE' "$log" >&2 || true
    echo "   corpus: $(ls "fuzz/corpus/$t" | wc -l) inputs" >&2
  else
    tail -40 "$log" >&2
    for a in fuzz/artifacts/"$t"/*; do
      [ -f "$a" ] || continue
      cp "$a" "fuzz/regressions/$t/"
      echo "   crash input kept: fuzz/regressions/$t/$(basename "$a")" >&2
    done
    status=1
  fi
  rm -f "$log"
done
exit $status
