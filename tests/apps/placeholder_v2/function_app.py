"""Fixture for tests/placeholder.rs: a v2 app assigned to placeholder workers. It shows
the environment the function sees and which runtime library serves it."""

import json
import os
import sys

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="env", methods=["GET"])
def env(req: func.HttpRequest) -> func.HttpResponse:
    names = req.params.get("names", "").split(",")
    body = {
        "env": {n: os.environ.get(n) for n in names if n},
        "runtime": [m for m in ("azure_functions_runtime", "azure_functions_runtime_v1") if m in sys.modules],
        "cwd": os.getcwd(),
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="hello", methods=["GET"])
def hello(req: func.HttpRequest) -> str:
    return "Hello from the assigned v2 app"
