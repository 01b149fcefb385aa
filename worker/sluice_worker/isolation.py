"""The app-first import path (the platform's Python 3.13+ isolation rule: the app's
packages never clash with the worker's), applied at start-up by worker.py and again
when a placeholder worker is specialised for an app.

The import path becomes: app packages (APP_DIR/.python_packages), the worker
environment (the bundled runtime library and SDK, used when the app has none), the
worker's own package, then the app directory. A module the worker already imported
whose package the app ships in another version is taken out of `sys.modules`, so the
app's copy is what later imports get; the worker keeps the objects it holds.
"""
import importlib
import os
import sys

# Top-level packages the worker uses internally, and those a placeholder pre-imports.
_PRIVATE = {
    "grpc": (("grpc",), "grpcio"),
    "google.protobuf": (("google", "protobuf"), "protobuf"),
    "google._upb": (("google", "_upb"), "protobuf"),
    "uvloop": (("uvloop",), "uvloop"),
    "azure_functions_runtime": (("azure_functions_runtime",), "azure_functions_runtime"),
    "azure_functions_runtime_v1": (("azure_functions_runtime_v1",), "azure_functions_runtime_v1"),
    "azure.functions": (("azure", "functions"), "azure_functions"),
    "werkzeug": (("werkzeug",), "werkzeug"),
    "markupsafe": (("markupsafe",), "markupsafe"),
}


def _existing(paths):
    return [p for p in paths if p and os.path.isdir(p)]


def _dist_version(site: str, dist: str) -> str | None:
    """The version of `dist` installed in `site`, from its .dist-info directory name."""
    prefix = dist.lower() + "-"
    try:
        for entry in os.listdir(site):
            if entry.lower().startswith(prefix) and entry.endswith(".dist-info"):
                return entry[len(prefix):-len(".dist-info")]
    except OSError:
        pass
    return None


def _evict(name: str) -> None:
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def app_first(app_dir: str, app_site: str, worker_site: str, here: str, previous=(), reuse_same=False) -> None:
    """Rebuilds sys.path app-first; `previous` are paths of an earlier app (the
    placeholder) to drop. `reuse_same` keeps an imported module whose distribution the
    app ships in the very same version (a placeholder's pre-imported SDK)."""
    if app_site:
        evicted = set()
        for name, (parts, dist) in _PRIVATE.items():
            if not os.path.isdir(os.path.join(app_site, *parts)):
                continue
            # The very same release is the same code: keep what is imported (this is
            # what makes a placeholder's pre-imported SDK reusable).
            ours = _dist_version(worker_site, dist) if reuse_same else None
            if ours is not None and ours == _dist_version(app_site, dist):
                continue
            _evict(name)
            evicted.add(name)
        if "azure.functions" in evicted:
            # A runtime imported before holds the old SDK's classes: it must be imported
            # again, against the app's SDK, as on a normal start.
            _evict("azure_functions_runtime")
            _evict("azure_functions_runtime_v1")
    mine = {here, app_dir, worker_site, app_site, "", *previous}
    rest = [p for p in sys.path if p not in mine]
    sys.path[:] = _existing([app_site, worker_site, here, app_dir]) + rest
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()
