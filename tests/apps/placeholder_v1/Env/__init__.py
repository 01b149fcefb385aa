"""Fixture for tests/placeholder.rs: a v1 (function.json) app assigned to placeholder
workers; shows the environment the function sees and the runtime library serving it."""
import json
import os
import sys

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    names = req.params.get("names", "").split(",")
    body = {
        "env": {n: os.environ.get(n) for n in names if n},
        "runtime": [m for m in ("azure_functions_runtime", "azure_functions_runtime_v1") if m in sys.modules],
        "v1": "azure_functions_runtime_v1" in sys.modules,
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")
