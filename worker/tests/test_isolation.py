"""The app-first import path: order, paths of an earlier app dropped, worker modules the
app ships taken out of sys.modules (or kept when the app ships the very same release)."""
import sys
import types

from sluice_worker.isolation import app_first


def make_dirs(tmp_path, *names):
    dirs = []
    for name in names:
        (tmp_path / name).mkdir(parents=True)
        dirs.append(str(tmp_path / name))
    return dirs


def test_app_packages_then_worker_then_its_package_then_the_app(tmp_path):
    app, app_site, worker_site, here, old = make_dirs(tmp_path, "app", "app_site", "worker_site",
                                                     "here", "old_app")
    sys.path[:] = [here, "/usr/lib/python3.13", old, app]
    app_first(app, app_site, worker_site, here, previous=[old])
    assert sys.path == [app_site, worker_site, here, app, "/usr/lib/python3.13"]


def test_missing_app_packages_are_left_out(tmp_path):
    app, worker_site, here = make_dirs(tmp_path, "app", "worker_site", "here")
    sys.path[:] = ["/usr/lib/python3.13"]
    app_first(app, str(tmp_path / "no_site"), worker_site, here)
    assert sys.path == [worker_site, here, app, "/usr/lib/python3.13"]


def test_a_module_the_app_ships_is_imported_again_from_the_app(tmp_path):
    app, app_site, worker_site, here = make_dirs(tmp_path, "app", "app_site", "worker_site", "here")
    (tmp_path / "app_site" / "uvloop").mkdir()
    sys.modules["uvloop"] = types.ModuleType("uvloop")
    sys.modules["uvloop.loop"] = types.ModuleType("uvloop.loop")
    app_first(app, app_site, worker_site, here)
    assert "uvloop" not in sys.modules and "uvloop.loop" not in sys.modules


def test_the_same_release_is_kept_only_when_asked(tmp_path):
    app, app_site, worker_site, here = make_dirs(tmp_path, "app", "app_site", "worker_site", "here")
    for site in ("app_site", "worker_site"):
        (tmp_path / site / "azure" / "functions").mkdir(parents=True)
        (tmp_path / site / "azure_functions-2.3.0.dist-info").mkdir()
    sdk = sys.modules["azure.functions"] = types.ModuleType("azure.functions")
    app_first(app, app_site, worker_site, here, reuse_same=True)
    assert sys.modules["azure.functions"] is sdk

    (tmp_path / "app_site" / "azure_functions-2.3.0.dist-info").rename(
        tmp_path / "app_site" / "azure_functions-2.4.0.dist-info")
    sys.modules["azure_functions_runtime"] = types.ModuleType("azure_functions_runtime")
    app_first(app, app_site, worker_site, here, reuse_same=True)
    # Another SDK: it and the runtime that holds the old SDK's classes are imported again.
    assert "azure.functions" not in sys.modules
    assert "azure_functions_runtime" not in sys.modules
