"""The worker's unit tests run against the worker environment Sluice builds (its pinned
protobuf and grpcio, and the FunctionRpc descriptor next to the package), which
`sluice check` names; scripts/test.sh puts it on PYTHONPATH. Each test gets sys.path and
sys.modules back as they were."""
import sys

import pytest


@pytest.fixture(autouse=True)
def import_state():
    path, modules = list(sys.path), dict(sys.modules)
    yield
    sys.path[:] = path
    for name in [m for m in sys.modules if m not in modules]:
        del sys.modules[name]
    sys.modules.update(modules)
