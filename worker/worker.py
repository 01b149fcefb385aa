"""Entry point Sluice starts: `python worker.py --host H --port P --workerId W ...`.

Dependency isolation (the platform's Python 3.13+ rule: the app's packages never clash
with the worker's). Start-up happens in two phases:

1. Only the worker's private environment is importable. The worker imports everything
   it needs — grpcio, protobuf, uvloop and its own package — and builds its message
   classes.
2. The worker's copies of packages that the app also ships (in
   APP_DIR/.python_packages) are taken out of `sys.modules`, and the import path is
   rebuilt app-first: app packages, then the worker environment (the bundled runtime
   library and SDK, used when the app has none), then the app directory.

From then on every import — the runtime library, `azure.functions`, the app's code —
resolves to the app's copy where it has one, while the worker keeps the module objects
it already holds. Two copies of a C extension (e.g. protobuf's upb) can live side by
side because each is loaded from its own file with its own symbols.
"""
import os
import sys

# Top-level packages the worker uses internally. If the app ships its own copy of one,
# the app's copy is what the app imports; the worker keeps using its own.
_PRIVATE = {
    "grpc": ("grpc",),
    "google.protobuf": ("google", "protobuf"),
    "google._upb": ("google", "_upb"),
    "uvloop": ("uvloop",),
}


def _existing(paths):
    return [p for p in paths if p and os.path.isdir(p)]


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    app_dir = os.environ.get("FUNCTIONS_APPLICATION_DIRECTORY") or os.getcwd()
    worker_site = os.environ.get("SLUICE_WORKER_SITE", "")
    app_site = os.environ.get("SLUICE_APP_SITE", "")
    ours = {here, app_dir, worker_site, app_site, ""}
    rest = [p for p in sys.path if p not in ours]

    # Phase 1: the worker's own dependencies only.
    sys.path[:] = _existing([worker_site, here]) + rest
    from sluice_worker.main import main as worker_main

    # Phase 2: hide what the app brings its own copy of, then go app-first.
    if app_site:
        for name, parts in _PRIVATE.items():
            if os.path.isdir(os.path.join(app_site, *parts)):
                for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                    del sys.modules[module]
    sys.path[:] = _existing([app_site, worker_site, here, app_dir]) + rest
    return worker_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
