"""Readiness as the load kit's scripts poll it: a URL that answers 200, polled with a deadline,
giving up early when the server's process has exited. Standard library only."""
import subprocess
import time
import urllib.request


def answers(url: str, timeout: float = 2) -> bool:
    """True when `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def wait_answering(url: str, deadline_s: float, proc: subprocess.Popen | None = None) -> None:
    """Polls `url` every 0.1 s until it answers 200; RuntimeError when `proc` exits first or
    `deadline_s` passes."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} during start-up")
        if answers(url):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {deadline_s} s")
