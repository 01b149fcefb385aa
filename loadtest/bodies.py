"""Large-body figures for Sluice: round trips of 1, 10 and 100 MB through the classic
(gRPC) path (`tests/apps/bodies`, function `echo`), throughput and the host's peak RSS
for each size. Standard library only.

    python3 loadtest/bodies.py --sluice target/release/sluice [--rounds N] [--out FILE]

Throughput is body size / round-trip time (the body crosses client→host→worker and
back). Peak RSS is the sluice process's VmHWM over its VmRSS before the size's first
round (the mark is reset through /proc/<pid>/clear_refs when the kernel allows it).
"""
import argparse
import hashlib
import http.client
import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(ROOT, "tests", "apps", "bodies")
MIB = 1 << 20


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def start(sluice):
    proc = subprocess.Popen(
        [sluice, "serve", APP, "--port", "0", "--bind", "127.0.0.1", "--admin-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "NO_COLOR": "1"})
    port, deadline = None, time.monotonic() + 600
    for line in proc.stdout:
        m = re.search(r"listening addr=\"?127\.0\.0\.1:(\d+)", line)
        if m and "admin listening" not in line:
            port = int(m.group(1))
        if "worker ready" in line and port:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("sluice did not become ready")
    # Keep draining its output so it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, port


def round_trip(port, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/api/echo", body=body,
                 headers={"Content-Type": "application/octet-stream"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status != 200 or hashlib.sha256(data).digest() != hashlib.sha256(body).digest():
        raise RuntimeError(f"bad echo: status {response.status}, {len(data)} bytes")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sluice", default=os.path.join(ROOT, "target", "release", "sluice"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out")
    args = p.parse_args()
    proc, port = start(args.sluice)
    rows = []
    try:
        round_trip(port, b"warm")
        for mb in (1, 10, 100):
            body = os.urandom(mb * MIB)
            rounds = max(1, args.rounds if mb < 100 else min(args.rounds, 3))
            try:
                with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
            base = status_kib(proc.pid, "VmRSS")
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                round_trip(port, body)
                times.append(time.perf_counter() - t)
            peak = status_kib(proc.pid, "VmHWM") - base
            best, mean = min(times), sum(times) / len(times)
            rows.append((mb, rounds, mb / best, mb / mean, peak / 1024))
            print(f"{mb:>4} MB x{rounds}: best {mb / best:7.1f} MB/s, mean {mb / mean:7.1f} MB/s, "
                  f"host peak +{peak / 1024:.0f} MiB", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    lines = [
        "| body | rounds | MB/s (best) | MB/s (mean) | host peak RSS over baseline |",
        "|---|---|---|---|---|",
        *[f"| {mb} MB | {n} | {b:.1f} | {m:.1f} | {pk:.0f} MiB ({pk / mb:.1f}x body) |"
          for mb, n, b, m, pk in rows],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# Large-body round trips ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n")
            f.write("`loadtest/bodies.sh`: POST /api/echo of tests/apps/bodies, 1 worker, "
                    "release build, 127.0.0.1. Throughput = body size / round-trip time.\n\n")
            f.write(text)


if __name__ == "__main__":
    main()
