#!/usr/bin/env bash
# Where the time goes under load: runs `sluice serve` (release) on the hello app with one
# worker, drives FUNCTION with wrk for SECONDS, samples the worker with py-spy (--native, so
# time inside C extensions and Rust shows by symbol) and reports CPU seconds per process and
# the hottest frames. Extra environment (e.g. SLUICE_WORKER_TRANSPORT=grpcio) passes through;
# PROFILE_APP picks another fixture app (e.g. loadtest/apps/hello_runtime_1_3).
#
#   loadtest/profile.sh [async_hello|sync_hello] [SECONDS]   → loadtest/.logs/profile-*.txt
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
function="${1:-async_hello}"
seconds="${2:-8}"
port=18171
logs="$here/.logs"; mkdir -p "$logs"
spy="$here/.venv-profile/bin/py-spy"
[[ -x "$spy" ]] || { python3 -m venv "$here/.venv-profile" && "$here/.venv-profile/bin/pip" install -q py-spy; }
(cd "$root" && cargo build --release --quiet --bin sluice)
bin="${CARGO_TARGET_DIR:-$root/target}/release/sluice"

"$bin" serve "${PROFILE_APP:-$here/apps/hello_async_sync}" --port "$port" --admin-port $((port + 1)) \
  >"$logs/profile-sluice.log" 2>&1 &
sluice=$!
trap 'kill "$sluice" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do   # bounded readiness poll (first start may build the worker env)
  curl -sf "http://127.0.0.1:$port/api/$function" >/dev/null && break
  sleep 0.1
done
worker="$(pgrep -P "$sluice" | head -1)"
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in clock ticks
s0=$(cpu "$sluice"); w0=$(cpu "$worker")
"$spy" record --native -r 100 -d "$seconds" -f raw -p "$worker" \
  -o "$logs/profile-$function.raw" >"$logs/profile-spy.log" 2>&1 &
spy_pid=$!
taskset -c 1 wrk -t1 -c64 -d"${seconds}s" --latency "http://127.0.0.1:$port/api/$function" \
  >"$logs/profile-wrk.txt"
wait "$spy_pid" || true
s1=$(cpu "$sluice"); w1=$(cpu "$worker")
hz=$(getconf CLK_TCK)
{
  grep -E "Requests/sec|50%|99%" "$logs/profile-wrk.txt"
  grep -o "transport [a-z]*" "$logs/profile-sluice.log" | head -1
  echo "CPU over ${seconds}s: sluice $(( (s1 - s0) * 100 / hz / seconds ))%, worker $(( (w1 - w0) * 100 / hz / seconds ))%"
  python3 "$here/profile_summary.py" "$logs/profile-$function.raw"
} | tee "$logs/profile-$function.txt"
