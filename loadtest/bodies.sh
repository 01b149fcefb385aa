#!/usr/bin/env bash
# Large-body figures side by side: upload and download of 1, 10 and 100 MiB through Sluice
# (release build), uvicorn and granian, with throughput and peak RSS for each
# → loadtest/results/bodies-<date>.md. uvicorn and granian come from the load kit's venv
# (`loadtest/run.sh --smoke` creates it); without it, Sluice's rows only.
#   loadtest/bodies.sh [--rounds N]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$root/target}"
(cd "$root" && cargo build --release --quiet --bin sluice)
mkdir -p "$here/results"
out="$here/results/bodies-$(date -u +%Y%m%d-%H%M).md"
python="python3"
servers=()
if [[ -x "$here/.venv/bin/uvicorn" && -x "$here/.venv/bin/granian" ]]; then
  python="$here/.venv/bin/python"
  servers=(--uvicorn "$here/.venv/bin/uvicorn" --granian "$here/.venv/bin/granian")
else
  echo "-- no loadtest/.venv: Sluice only (run loadtest/run.sh --smoke once for uvicorn and granian)" >&2
fi
"$python" "$here/bodies.py" --sluice "$target/release/sluice" "${servers[@]}" --out "$out" "$@"
echo "-- written $out" >&2
