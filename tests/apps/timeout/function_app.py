"""Fixture for tests/resilience/: host.json sets functionTimeout to 2 s.

`sleepy` blocks its thread (a sync function cannot be cancelled), `pid` answers at once.
"""

import os
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="sleepy", methods=["GET"])
def sleepy(req: func.HttpRequest) -> str:
    time.sleep(float(req.params.get("s", "10")))
    return "woke up"


@app.route(route="pid", methods=["GET"])
def pid(req: func.HttpRequest) -> str:
    return str(os.getpid())
