"""Interleaved A/B of two Sluice builds (or two configurations) on one app, for changes on the
request path (e.g. issue 15's trace context): rounds alternate A, B, A, B, …; each round starts
Sluice afresh, warms up, then runs `wrk -t1 -cC -dD` pinned to one CPU and reads the CPU time the
host process and its worker used from /proc, so each round gives req/s and CPU µs per request.

    python3 loadtest/ab.py --a /tmp/sluice-base --b target/release/sluice \\
        [--a-args "..."] [--b-args "--access-log"] [--rounds 3] [--duration 10] [--out FILE]

Needs wrk (Debian `wrk`) and `taskset`; stdlib only. Loads only 127.0.0.1.
"""
import argparse
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time

from probe import wait_answering
from procfs import HZ, children, cpu_ticks

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "apps", "hello_async_sync")
PORT = 18291


def wrk(url, connections, seconds, cpu):
    out = subprocess.run(
        ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url],
        check=True, capture_output=True, text=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"errors in the run:\n{out}")
    return total, rps


def round_(binary, extra, args, log):
    url = f"http://127.0.0.1:{PORT}/api/{args.function}"
    pin = ["taskset", "-c", args.server_cpus] if args.server_cpus else []
    command = pin + [binary, "serve", args.app, "--workers", "1", "--port", str(PORT),
               "--bind", "127.0.0.1", "--admin-port", "0"] + shlex.split(extra)
    env = dict(os.environ, NO_COLOR="1")
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, env=env)
    if pin:  # taskset execs the binary: the pid is Sluice's
        time.sleep(0.2)
    try:
        wait_answering(url, 120)
        wrk(url, args.connections, args.warmup, args.wrk_cpu)
        pids = [proc.pid] + children(proc.pid)
        before = [cpu_ticks(p) for p in pids]
        total, rps = wrk(url, args.connections, args.duration, args.wrk_cpu)
        after = [cpu_ticks(p) for p in pids]
        host_us = (after[0] - before[0]) / HZ * 1e6 / total
        worker_us = sum(a - b for a, b in zip(after[1:], before[1:])) / HZ * 1e6 / total
        return rps, host_us, worker_us
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--a", required=True, help="sluice binary A (the baseline)")
    p.add_argument("--b", required=True, help="sluice binary B")
    p.add_argument("--a-args", default="")
    p.add_argument("--b-args", default="")
    p.add_argument("--app", default=APP)
    p.add_argument("--function", default="async_hello")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--wrk-cpu", default="1")
    p.add_argument("--server-cpus", default="",
                   help="pin Sluice and its worker (e.g. 0): then req/s follows their CPU cost")
    p.add_argument("--out")
    args = p.parse_args()
    log = os.path.join(HERE, ".logs", "ab.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    results = {"A": [], "B": []}
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    for n in range(args.rounds):
        for name, binary, extra in (("A", args.a, args.a_args), ("B", args.b, args.b_args)):
            r = round_(binary, extra, args, log)
            results[name].append(r)
            print(f"round {n + 1} {name}: {r[0]:,.0f} req/s, host {r[1]:.1f} µs/req, "
                  f"worker {r[2]:.1f} µs/req", flush=True)
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    lines = [f"`wrk -t1 -c{args.connections} -d{args.duration}s` on CPU {args.wrk_cpu}, "
             f"`/api/{args.function}`, app `{os.path.relpath(args.app, os.path.dirname(HERE))}`, "
             f"1 worker{', server on CPU ' + args.server_cpus if args.server_cpus else ''}, "
             f"{args.rounds} interleaved rounds; load average before "
             f"{' '.join(load_before)}, after {' '.join(load_after)}.", "",
             "| | build | req/s median (rounds) | best req/s | host CPU µs/req median / best "
             "| worker CPU µs/req median / best |",
             "|---|---|---|---:|---:|---:|"]
    for name, binary, extra in (("A", args.a, args.a_args), ("B", args.b, args.b_args)):
        rs = results[name]
        rounds = " / ".join(f"{r[0]:,.0f}" for r in rs)
        label = f"{binary} {extra}".strip()
        lines.append(f"| {name} | `{label}` | **{statistics.median(r[0] for r in rs):,.0f}** "
                     f"({rounds}) | {max(r[0] for r in rs):,.0f} | "
                     f"{statistics.median(r[1] for r in rs):.1f} / {min(r[1] for r in rs):.1f} | "
                     f"{statistics.median(r[2] for r in rs):.1f} / {min(r[2] for r in rs):.1f} |")
    ratio = statistics.median(r[0] for r in results["B"]) / statistics.median(r[0] for r in results["A"])
    best = max(r[0] for r in results["B"]) / max(r[0] for r in results["A"])
    lines += ["", f"B / A req/s: medians **{ratio:.3f}**, best rounds **{best:.3f}** (on a shared "
              "machine the best round is the one least disturbed by other load)"]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
