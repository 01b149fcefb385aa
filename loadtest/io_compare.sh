#!/usr/bin/env bash
# Side-by-side epoll vs io_uring (and --threads) comparison of Sluice's front end:
# `GET /` (answered by Sluice itself, no worker) and `GET /api/sync_hello` (one Python
# worker), wrk -t1 -c64, rounds alternating between configurations so that background
# load hits both alike. Also samples the host's peak RSS (VmHWM; workers excluded).
#
#   loadtest/io_compare.sh [ROUNDS] [SECONDS] [CONFIG...]
#   CONFIG is a label=flags pair, e.g. "uring=--io uring" (default: epoll and uring).
# Needs a release build (cargo build --release; SLUICE_BIN=PATH picks another binary) and
# wrk; prints one line per run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${1:-3}"; secs="${2:-10}"; shift $(( $# > 2 ? 2 : $# )) || true
configs=("$@")
[[ ${#configs[@]} -gt 0 ]] || configs=("epoll=--io epoll" "uring=--io uring")
python="${SLUICE_PYTHON:-$(ls -d "$HOME"/.pyenv/versions/3.13.*/bin/python3.13 | sort -rV | head -1)}"
sluice="${SLUICE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/sluice}"
app="$root/loadtest/apps/hello_async_sync"
logs="$root/loadtest/.logs"; mkdir -p "$logs"

start() {  # $1 = label, $2 = flags; sets pid and port
  local log="$logs/io-compare-$1.log"
  # shellcheck disable=SC2086
  NO_COLOR=1 "$sluice" serve "$app" --python "$python" --port 0 --bind 127.0.0.1 --admin-port 0 \
    --workers 1 --drain-grace 1 $2 >"$log" 2>&1 &
  pid=$!
  port=""
  for _ in $(seq 1 600); do
    if grep -q "worker ready" "$log" 2>/dev/null; then
      port="$(grep -m1 ' listening addr=' "$log" | sed -E 's/.*addr=[^:]+:([0-9]+).*/\1/')"
      break
    fi
    kill -0 "$pid" 2>/dev/null || { echo "sluice ($1) exited; see $log" >&2; exit 1; }
    sleep 0.1
  done
  [[ -n "$port" ]] || { echo "sluice ($1) not ready" >&2; kill "$pid"; exit 1; }
}

rps() {  # $1 = url
  taskset -c 1 wrk -t1 -c64 -d"${secs}s" "$1" 2>&1 | awk '/Requests\/sec/ {print $2} /Non-2xx|Socket errors/ {print "ERR " $0 > "/dev/stderr"}'
}

for round in $(seq 1 "$rounds"); do
  for config in "${configs[@]}"; do
    label="${config%%=*}"; flags="${config#*=}"
    start "$label" "$flags"
    curl -sf "http://127.0.0.1:$port/api/sync_hello" >/dev/null
    taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$port/" >/dev/null 2>&1  # warm-up
    host="$(rps "http://127.0.0.1:$port/")"
    hello="$(rps "http://127.0.0.1:$port/api/sync_hello")"
    hwm="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
    rss="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
    echo "round=$round config=$label host_rps=$host hello_rps=$hello host_peak_rss_kb=$hwm host_rss_kb=$rss"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
