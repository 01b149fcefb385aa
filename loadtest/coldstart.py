"""Cold-start bench: process start → first 200, over repeated runs, with a per-phase
breakdown read from Sluice's own log lines (their timestamps), and the same for
placeholder mode (assignment → first 200).

    python3 loadtest/coldstart.py [--binary target/release/sluice] [--app examples/hello]
                                  [--runs 10] [--workers "1 4"] [--placeholder] [--importtime PY]
                                  [--baseline OTHER_SLUICE] [--out FILE]

--importtime adds the slowest imports of a worker start (`python -X importtime` of the
worker package, the runtime library and the app, with the cached worker environment).

Environments must already be installed (one warm-up run is done first and not counted).
Stdlib only; only 127.0.0.1 is contacted; every wait is bounded.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+\w+\s+[\w:]+: (.*)$")
TIMEOUT_S = 60.0

# (phase name, message prefix in Sluice's log); first occurrence per run.
PHASES = [
    ("listening", "listening "),
    ("worker process started", "worker process started"),
    ("worker connected (StartStream)", "worker connected"),
    ("init done", "worker initialised"),
    ("functions metadata", "functions metadata received"),
    ("functions loaded", "functions loaded"),
    ("worker ready", "worker ready"),
]
ASSIGN_PHASES = [
    ("assignment received", "assignment received"),
    ("env reload done", "environment reloaded"),
    ("functions metadata", "functions metadata received"),
    ("functions loaded", "functions loaded"),
    ("worker ready", "worker ready"),
]


def log_time(text: str) -> float:
    return datetime.fromisoformat(text + "+00:00").timestamp()


class Sluice:
    """One sluice process; its stderr is parsed into (timestamp, message) events."""

    def __init__(self, args: list[str], env: dict):
        self.events: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        self.spawned = time.time()
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stderr:
            m = LINE.match(ANSI.sub("", raw.rstrip("\n")))
            if m:
                with self.cond:
                    self.events.append((log_time(m.group(1)), m.group(2)))
                    self.cond.notify_all()

    def wait_for(self, prefix: str, after: float = 0.0, count: int = 1) -> list[tuple[float, str]]:
        deadline = time.monotonic() + TIMEOUT_S
        with self.cond:
            while True:
                found = [e for e in self.events if e[1].startswith(prefix) and e[0] >= after]
                if len(found) >= count:
                    return found
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sluice exited ({self.proc.returncode}) before '{prefix}'")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no '{prefix}' within {TIMEOUT_S}s")
                self.cond.wait(min(left, 0.5))

    def addr(self, prefix: str) -> str:
        _, msg = self.wait_for(prefix)[0]
        port = re.search(r"addr=[\d.]+:(\d+)", msg).group(1)
        return f"http://127.0.0.1:{port}"

    def first(self, prefix: str, after: float) -> float | None:
        with self.cond:
            return next((t for t, m in self.events if m.startswith(prefix) and t >= after), None)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def first_200(url: str) -> float:
    """Polls until one request answers 200; returns the time it did (wall clock)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
                if r.status == 200:
                    return time.time()
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.002)
    raise RuntimeError(f"{url} never answered 200")


def base_env() -> dict:
    env = dict(os.environ)
    env["SLUICE_LOG"] = "info"
    env["NO_COLOR"] = "1"
    return env


def cold_run(binary: str, app: str, workers: int) -> tuple[float, dict]:
    args = [binary, "serve", app, "--port", "0", "--admin-port", "0", "--workers", str(workers)]
    s = Sluice(args, base_env())
    try:
        url = s.addr("listening ") + "/api/hello"
        done = first_200(url)
        s.wait_for("worker ready", count=workers)
        phases = {name: s.first(prefix, 0.0) for name, prefix in PHASES}
        phases = {k: (v - s.spawned) * 1000 for k, v in phases.items() if v is not None}
        phases["first 200"] = (done - s.spawned) * 1000
        phases[f"all {workers} ready"] = (s.wait_for("worker ready", count=workers)[-1][0] - s.spawned) * 1000
        return (done - s.spawned) * 1000, phases
    finally:
        s.stop()


def placeholder_run(binary: str, app: str, workers: int) -> tuple[float, dict]:
    args = [binary, "serve", "--placeholder", "--port", "0", "--admin-port", "0", "--workers", str(workers)]
    s = Sluice(args, base_env())
    try:
        url = s.addr("listening ") + "/api/hello"
        admin = s.addr("admin listening")
        s.wait_for("placeholder worker ready", count=workers)
        body = json.dumps({"app_dir": os.path.abspath(app), "environment": {"BENCH": "1"}}).encode()
        req = urllib.request.Request(admin + "/admin/assign", data=body, method="POST")
        answer = {}

        def post():
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
                answer["status"] = r.status

        # A client at the door: polls while the assignment is in progress.
        poster = threading.Thread(target=post)
        assigned = time.time()
        poster.start()
        done = first_200(url)
        poster.join(TIMEOUT_S)
        if answer.get("status") != 200:
            raise RuntimeError(f"assignment answered {answer}")
        start = assigned - 0.001
        phases = {name: s.first(prefix, start) for name, prefix in ASSIGN_PHASES}
        phases = {k: (v - assigned) * 1000 for k, v in phases.items() if v is not None}
        phases["first 200"] = (done - assigned) * 1000
        return (done - assigned) * 1000, phases
    finally:
        s.stop()


def worker_env(cache: str) -> str | None:
    """The cached worker environment built from this checkout's worker files."""
    with open(os.path.join(ROOT, "worker", "sluice_worker", "main.py"), "rb") as f:
        ours = f.read()
    found = []
    for entry in os.listdir(cache) if os.path.isdir(cache) else []:
        main = os.path.join(cache, entry, "worker", "sluice_worker", "main.py")
        try:
            with open(main, "rb") as f:
                if f.read() == ours and os.path.exists(os.path.join(cache, entry, ".complete")):
                    found.append(os.path.join(cache, entry))
        except OSError:
            continue
    return max(found, key=os.path.getmtime) if found else None


def importtime(python: str, app: str, top: int = 15) -> list[str]:
    cache = os.environ.get("SLUICE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sluice")
    env_dir = worker_env(cache)
    if env_dir is None:
        return ["(no cached worker environment for this checkout: run Sluice once)", ""]
    app_site = os.path.join(app, ".python_packages", "lib", "site-packages")
    path = [app_site, os.path.join(env_dir, "site-packages"), os.path.join(env_dir, "worker"), app]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if os.path.isdir(p)))
    code = "import sluice_worker.main, sluice_worker.transport, uvloop, azure_functions_runtime, function_app"
    runs = []
    for _ in range(5):
        out = subprocess.run([python, "-X", "importtime", "-c", code], cwd=app, env=env,
                             capture_output=True, text=True, timeout=TIMEOUT_S)
        rows = {}
        for line in out.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if m and len(m.group(3)) <= 3:  # top-level and direct imports
                rows[m.group(4)] = int(m.group(2)) / 1000
        runs.append(rows)
    names = set().union(*runs)
    median = {n: statistics.median(r.get(n, 0.0) for r in runs) for n in names}
    lines = ["### slowest imports of a worker start (cumulative ms, median of 5, `-X importtime`)", "",
             "| module | ms |", "|---|---|"]
    for name, ms in sorted(median.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| {name} | {ms:.1f} |")
    return lines + [""]


def summarise(title: str, totals: list[float], breakdowns: list[dict]) -> list[str]:
    out = [f"### {title}", "", f"runs: {len(totals)}; ms: min {min(totals):.0f}, "
           f"median {statistics.median(totals):.0f}, max {max(totals):.0f}", "",
           "| phase (ms from start) | min | median | max |", "|---|---|---|---|"]
    names = list(dict.fromkeys(k for b in breakdowns for k in b))
    names.sort(key=lambda k: statistics.median(b[k] for b in breakdowns if k in b))
    for name in names:
        values = [b[name] for b in breakdowns if name in b]
        out.append(f"| {name} | {min(values):.0f} | {statistics.median(values):.0f} | {max(values):.0f} |")
    return out + [""]


def main() -> int:
    p = argparse.ArgumentParser()
    default_bin = os.path.join(ROOT, "target", "release", "sluice")
    if not os.path.exists(default_bin):
        default_bin = os.path.join(ROOT, "target", "debug", "sluice")
    p.add_argument("--binary", default=default_bin)
    p.add_argument("--app", default=os.path.join(ROOT, "examples", "hello"))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--workers", default="1 4")
    p.add_argument("--placeholder", action="store_true", help="also measure assignment → first 200")
    p.add_argument("--baseline", metavar="BINARY", help="another sluice build, run interleaved for a side-by-side ratio")
    p.add_argument("--importtime", metavar="PYTHON", help="also profile the worker's imports with this Python")
    p.add_argument("--out", help="append the markdown report to this file")
    a = p.parse_args()

    cold_run(a.binary, a.app, 1)  # warm-up: installs/caches, page cache
    load = os.getloadavg()
    lines = [f"## Cold start ({time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC)", "",
             f"binary: `{os.path.relpath(a.binary, ROOT)}`, app: `{os.path.relpath(a.app, ROOT)}`, "
             f"cpus: {os.cpu_count()}, load average before: {load[0]:.2f}", ""]
    if a.baseline:
        cold_run(a.baseline, a.app, 1)
        lines += [f"baseline: `{a.baseline}`, runs interleaved with the binary's (same load)", ""]
    for workers in [int(w) for w in a.workers.split()]:
        results, base = [], []
        for _ in range(a.runs):
            results.append(cold_run(a.binary, a.app, workers))
            if a.baseline:
                base.append(cold_run(a.baseline, a.app, workers))
        if base:
            lines += summarise(f"baseline: start → first 200, {workers} worker(s)", [r[0] for r in base],
                               [r[1] for r in base])
        lines += summarise(f"start → first 200, {workers} worker(s)", [r[0] for r in results],
                           [r[1] for r in results])
        if base:
            ratio = statistics.median(r[0] for r in results) / statistics.median(r[0] for r in base)
            lines += [f"median ratio (binary / baseline), {workers} worker(s): {ratio:.2f}", ""]
        if a.placeholder:
            results = [placeholder_run(a.binary, a.app, workers) for _ in range(a.runs)]
            lines += summarise(f"placeholder: assign → first 200, {workers} worker(s)",
                               [r[0] for r in results], [r[1] for r in results])
    if a.importtime:
        lines += importtime(a.importtime, a.app)
    lines.append(f"load average after: {os.getloadavg()[0]:.2f}")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
