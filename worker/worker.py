"""Entry point Sluice starts: `python worker.py --host H --port P --workerId W ...`.

It only fixes the import path, then hands over to the `sluice_worker` package. Order
of `sys.path` follows the platform's Python 3.13+ worker: the app's own packages
first (so the app's pinned libraries, runtime included, win), then the worker's
private environment, then the worker package and the app directory.
"""
import os
import sys


def _fix_path() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    app_dir = os.environ.get("FUNCTIONS_APPLICATION_DIRECTORY") or os.getcwd()
    front = [
        os.environ.get("SLUICE_APP_SITE", ""),
        os.environ.get("SLUICE_WORKER_SITE", ""),
        here,
        app_dir,
    ]
    front = [p for p in front if p and os.path.isdir(p)]
    rest = [p for p in sys.path if p not in front and p != here]
    sys.path[:] = front + rest


if __name__ == "__main__":
    _fix_path()
    from sluice_worker.main import main

    sys.exit(main(sys.argv[1:]))
