"""Large-body figures, side by side: upload and download of 1, 10 and 100 MiB through Sluice
(the classic gRPC path, `tests/apps/bodies`), uvicorn and granian (`bodies_asgi.py`, the same
routes), with the throughput and the server's peak RSS for each row. Client: standard library.

    python3 loadtest/bodies.py --sluice target/release/sluice \
        [--uvicorn .venv/bin/uvicorn] [--granian .venv/bin/granian] [--rounds N] [--out FILE]

`--sluice` may be given more than once, as `NAME=PATH`, for an interleaved A/B of two builds
(e.g. `--sluice base=/tmp/sluice-base --sluice new=target/release/sluice`). `--sluice-v2 PATH`
adds a row for the http-v2 path: the same routes in a FastAPI-extension app
(`tests/apps/streaming`), whose requests Sluice forwards to the worker's own HTTP server; it
too may be repeated as `NAME=PATH`.

- upload: `POST /api/sha` with the body; the server reads it whole and answers its SHA-256,
  which the client checks.
- download: `GET /api/zeros?bytes=N`; the server answers N zero bytes (cheap to make, so the
  time is the transfer's), which the client counts and checks.
Throughput is body size / request time. Peak RSS is the server's main process's VmHWM over
its VmRSS before the size's first round (the mark is reset through /proc/<pid>/clear_refs
where the kernel allows): Sluice's host without its worker, uvicorn's and granian's main
process (with one worker, uvicorn serves in its main process; granian in a child).
CPU is the server's processes' utime + stime from /proc over the timed rounds, per MiB
moved: the main process and its descendants (Sluice's workers, granian's) apart.
Rounds of the servers are interleaved, so a disturbance on this shared machine hits all.
"""
import argparse
import hashlib
import http.client
import os
import socket
import subprocess
import sys
import time

from probe import wait_answering
from procfs import HZ, cpu_ticks, descendants, status_kib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = os.path.join(ROOT, "tests", "apps", "bodies")
APP_V2 = os.path.join(ROOT, "tests", "apps", "streaming")
MIB = 1 << 20
SIZES = (1, 10, 100)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def commands(args):
    """Server name → argv, for the servers given; `{port}` stands for the port."""
    out = {}
    serve = ["--port", "{port}", "--bind", "127.0.0.1", "--admin-port", "0", "--workers", "1"]
    for name, binary in sluices(args.sluice):
        out[name] = [binary, "serve", APP, *serve]
    for name, binary in sluices(args.sluice_v2, "http-v2"):
        out[name] = [binary, "serve", APP_V2, *serve]
    asgi = ["--host", "127.0.0.1", "--port", "{port}"]
    if args.uvicorn:
        out["uvicorn 1w"] = [args.uvicorn, "--app-dir", HERE, "bodies_asgi:app", *asgi, "--workers", "1",
                             "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                             "--log-level", "warning"]
    if args.granian:
        out["granian 1w"] = [args.granian, "--working-dir", HERE, "--interface", "asgi", *asgi,
                             "--workers", "1", "--http", "1", "--loop", "uvloop", "--log-level",
                             "warning", "bodies_asgi:app"]
    return out


def sluices(given, path="1w"):
    """`--sluice`/`--sluice-v2` values → (row name, binary); `NAME=PATH` names a build for an
    A/B. Without `--sluice`, the release build's row; without `--sluice-v2`, none."""
    if not given:
        default = os.path.join(ROOT, "target", "release", "sluice")
        return [("sluice 1w", default)] if path == "1w" else []
    prefix = "sluice" if path == "1w" else f"sluice {path}"
    return [(f"{prefix} {v.split('=', 1)[0]}" if "=" in v else f"sluice {path}", v.split("=", 1)[-1])
            for v in given]


def cpu(pid):
    """CPU ticks of `pid` and of its descendants."""
    return cpu_ticks(pid), sum(cpu_ticks(c) for c in descendants(pid))


def start(argv, port, deadline_s=600):
    """Starts a server and polls until it answers a 1-byte download."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
    try:
        wait_answering(f"http://127.0.0.1:{port}/api/zeros?bytes=1", deadline_s, proc)
    except RuntimeError:
        proc.kill()
        raise
    return proc


def upload(port, body, digest):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/api/sha", body=body, headers={"Content-Type": "application/octet-stream"})
    response = conn.getresponse()
    answer = response.read().decode().strip()
    conn.close()
    if response.status != 200 or answer != digest:
        raise RuntimeError(f"bad upload: status {response.status}, {answer[:80]!r}")


def download(port, size):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", f"/api/zeros?bytes={size}")
    response = conn.getresponse()
    received, nonzero = 0, False
    while chunk := response.read(4 * MIB):
        received += len(chunk)
        nonzero = nonzero or chunk.count(0) != len(chunk)
    conn.close()
    if response.status != 200 or received != size or nonzero:
        raise RuntimeError(f"bad download: status {response.status}, {received} of {size} bytes")


def reset_peak(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sluice", action="append", help="PATH or NAME=PATH; repeat for an A/B")
    p.add_argument("--sluice-v2", action="append", help="PATH or NAME=PATH for the http-v2 row; repeat for an A/B")
    p.add_argument("--uvicorn")
    p.add_argument("--granian")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="MiB, comma-separated")
    p.add_argument("--out")
    args = p.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    servers = {}
    try:
        for name, argv in commands(args).items():
            port = free_port()
            servers[name] = (start([a.replace("{port}", str(port)) for a in argv], port), port)
        # (server, direction, MiB) → [seconds], peak KiB over baseline, (main, children) ticks
        times, peaks, ticks = {}, {}, {}
        for mb in sizes:
            size = mb * MIB
            body = os.urandom(size)
            digest = hashlib.sha256(body).hexdigest()
            rounds = args.rounds if mb < 100 else min(args.rounds, 3)
            for direction in ("upload", "download"):
                base = {}
                for name, (proc, port) in servers.items():
                    reset_peak(proc.pid)
                    base[name] = status_kib(proc.pid, "VmRSS")
                    # One untimed round: first-touch allocations are not the steady state.
                    upload(port, body, digest) if direction == "upload" else download(port, size)
                for _ in range(rounds):
                    for name, (proc, port) in servers.items():
                        before, t = cpu(proc.pid), time.perf_counter()
                        upload(port, body, digest) if direction == "upload" else download(port, size)
                        times.setdefault((name, direction, mb), []).append(time.perf_counter() - t)
                        after, key = cpu(proc.pid), (name, direction, mb)
                        used = [a - b for a, b in zip(after, before)]
                        ticks[key] = [x + u for x, u in zip(ticks.get(key, [0, 0]), used)]
                for name, (proc, port) in servers.items():
                    peaks[(name, direction, mb)] = status_kib(proc.pid, "VmHWM") - base[name]
                    ts = times[(name, direction, mb)]
                    print(f"{name:<11} {direction:<8} {mb:>4} MiB x{rounds}: best {mb / min(ts):8.1f} MiB/s, "
                          f"peak +{peaks[(name, direction, mb)] / 1024:.0f} MiB", file=sys.stderr)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    text = report(servers, sizes, times, peaks, ticks)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# Large bodies side by side ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n")
            f.write("`loadtest/bodies.sh`: release build, one worker each, 127.0.0.1, rounds interleaved "
                    f"across servers; load average {' '.join(open('/proc/loadavg').read().split()[:3])} "
                    "at the end. MiB/s = body size / request time.\n\n")
            f.write(text)


def report(servers, sizes, times, peaks, ticks):
    names = list(servers)
    lines = ["| direction | body | server | MiB/s (best) | MiB/s (median) | vs the faster ASGI server "
             "(best) | CPU ms per 100 MiB: main + children | peak RSS over baseline |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for direction in ("upload", "download"):
        for mb in sizes:
            best = {n: mb / min(times[(n, direction, mb)]) for n in names}
            asgi = [best[n] for n in names if not n.startswith("sluice")]
            for n in names:
                ts = sorted(times[(n, direction, mb)])
                median = mb / ts[len(ts) // 2]
                ratio = f"{best[n] / max(asgi):.2f}×" if asgi else "n/a"
                peak = peaks[(n, direction, mb)] / 1024
                moved = mb * len(ts) / 100
                main_ms, child_ms = (1000 * t / HZ / moved for t in ticks[(n, direction, mb)])
                lines.append(f"| {direction} | {mb} MiB | {n} | {best[n]:.1f} | {median:.1f} | {ratio} "
                             f"| {main_ms:.0f} + {child_ms:.0f} | {peak:.0f} MiB ({peak / mb:.1f}× body) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
