"""Fixture for tests/resilience.rs: a slow and a fast function that report their worker's pid.

`slow` logs `slow-start id=<id> pid=<pid>` when it begins, so a test can tell from Sluice's
output which requests are running on which worker before it kills one.
"""

import asyncio
import logging
import os

import azure.functions as func

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
