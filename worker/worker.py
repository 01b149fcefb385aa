"""Entry point Sluice starts: `python worker.py --host H --port P --workerId W ...`.

Dependency isolation (the platform's Python 3.13+ rule: the app's packages never clash
with the worker's). Start-up happens in two phases:

1. Only the worker's private environment is importable. The worker imports everything
   it needs — the transport, protobuf, uvloop and its own package — and builds its
   message classes.
2. The import path is rebuilt app-first (`sluice_worker.isolation`): app packages, then
   the worker environment (the bundled runtime library and SDK, used when the app has
   none), then the app directory; worker modules the app ships another version of are
   taken out of `sys.modules`. A placeholder worker (WEBSITE_PLACEHOLDER_MODE=1) does
   phase 2 again when it is specialised for the real app.

From then on every import — the runtime library, `azure.functions`, the app's code —
resolves to the app's copy where it has one, while the worker keeps the module objects
it already holds. Two copies of a C extension (e.g. protobuf's upb) can live side by
side because each is loaded from its own file with its own symbols.
"""
import os
import sys


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    app_dir = os.environ.get("FUNCTIONS_APPLICATION_DIRECTORY") or os.getcwd()
    worker_site = os.environ.get("SLUICE_WORKER_SITE", "")
    app_site = os.environ.get("SLUICE_APP_SITE", "")
    ours = {here, app_dir, worker_site, app_site, ""}
    rest = [p for p in sys.path if p not in ours]

    # Phase 1: the worker's own dependencies only.
    sys.path[:] = [p for p in (worker_site, here) if p and os.path.isdir(p)] + rest
    from sluice_worker.isolation import app_first
    from sluice_worker.main import main as worker_main

    # Phase 2: app-first.
    app_first(app_dir, app_site, worker_site, here)
    return worker_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
