"""Fixture for tests/resilience/: a slow and a fast function that report their worker's pid,
and a sync one that leaves a mark when it starts.

`slow` logs `slow-start id=<id> pid=<pid>` when it begins, so a test can tell from Sluice's
output which requests are running on which worker before it kills one.
"""

import asyncio
import logging
import os
import time

import azure.functions as func

# Imports after the first one (a second or restarted worker) can be slowed or broken, so a
# test can see what requests get while a worker is coming: FAULTS_MARKER names a file the
# first import creates; FAULTS_LATER_IMPORTS is `slow:<seconds>` or `fail`.
_marker = os.environ.get("FAULTS_MARKER")
if _marker:
    try:
        with open(_marker, "x"):
            pass
    except FileExistsError:
        _later = os.environ.get("FAULTS_LATER_IMPORTS", "")
        if _later == "fail":
            raise RuntimeError("faults: a later import fails on purpose")
        if _later.startswith("slow:"):
            time.sleep(float(_later[len("slow:"):]))

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="slow", methods=["GET"])
async def slow(req: func.HttpRequest) -> str:
    seconds = float(req.params.get("s", "1"))
    request_id = req.params.get("id", "-")
    logging.info("slow-start id=%s pid=%d", request_id, os.getpid())
    await asyncio.sleep(seconds)
    return str(os.getpid())


@app.route(route="pid", methods=["GET"])
def pid(req: func.HttpRequest) -> str:
    return str(os.getpid())


@app.route(route="mark", methods=["GET"])
def mark(req: func.HttpRequest) -> str:
    """A sync function: appends `id` to the file FAULTS_MARKS names as it starts, then holds
    its pool thread for `s` seconds."""
    with open(os.environ["FAULTS_MARKS"], "a") as marks:
        marks.write(req.params.get("id", "-") + "\n")
    time.sleep(float(req.params.get("s", "1")))
    return str(os.getpid())
