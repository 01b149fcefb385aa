#!/usr/bin/env bash
# Large-body figures: 1, 10 and 100 MB round trips through Sluice (release build),
# throughput and host peak RSS for each → loadtest/results/bodies-<date>.md.
# Standard-library Python only (any python3 ≥ 3.9 runs the client; the workers use 3.13).
#   loadtest/bodies.sh [--rounds N]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$root/target}"
(cd "$root" && cargo build --release --quiet --bin sluice)
mkdir -p "$here/results"
out="$here/results/bodies-$(date -u +%Y%m%d-%H%M).md"
python3 "$here/bodies.py" --sluice "$target/release/sluice" --out "$out" "$@"
echo "-- written $out" >&2
