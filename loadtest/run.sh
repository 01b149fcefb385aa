#!/usr/bin/env bash
# Sluice load test: installs what it needs, builds, then runs Sluice side by side with
# uvicorn, granian and a raw hyper ceiling on 127.0.0.1 (see loadtest/README.md).
#
#   loadtest/run.sh            full run (~5 min): c = 16 64, 15 s per run
#                              → loadtest/results/<date>-<commit>.md + .png
#   loadtest/run.sh --smoke    seconds per config, c = 16, plus k6 smoke.js
#                              → loadtest/results/smoke-latest.md + .png (gitignored)
#   loadtest/run.sh --soak     soak under worker kills (~6 min; --soak first): installs and
#                              builds sluice as above, then runs soak.py with the options after it
#                              (e.g. --duration 60 --kill-every 5)
#                              → loadtest/results/<date>-soak.md
#
# Other options go to bench.py: --concurrency "16 64 256", --duration SECS, --warmup SECS,
# --only sluice,uvicorn, --wrk-cpu N, --server-cpus LIST. Exit status 1 when any request
# failed (non-2xx or socket error) or a server did not start.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="$here/.venv"

log() { printf '%s\n' "-- $*" >&2; }

mode=bench
if [[ "${1:-}" == "--soak" ]]; then
  mode=soak
  shift
fi

# wrk and taskset (util-linux) come from Debian.
if ! command -v wrk >/dev/null; then
  log "installing wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux >/dev/null; }

# Python 3.13: the newest pyenv 3.13.x, else python3.13 on PATH (a pyenv shim on PATH may
# not run, so each candidate is tried).
python=""
for candidate in $(ls -d "$HOME"/.pyenv/versions/3.13.*/bin/python3.13 2>/dev/null | sort -rV) \
                 $(command -v python3.13 || true); do
  if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
[[ -n "$python" ]] || { echo "run.sh: no working Python 3.13 (~/.pyenv/versions/3.13.* or PATH)" >&2; exit 2; }

# The venv is rebuilt only when requirements.txt changes.
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "creating $venv with $python"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" >"$stamp"
fi

log "building sluice (release)"
(cd "$root" && cargo build --release --quiet --bin sluice)
if [[ "$mode" == soak ]]; then
  exec "$venv/bin/python" "$here/soak.py" --python "$python" "$@"
fi

log "building hyper-hello (release)"
cargo build --release --quiet --manifest-path "$here/hyper-hello/Cargo.toml"

exec "$venv/bin/python" "$here/bench.py" --python "$python" "$@"
