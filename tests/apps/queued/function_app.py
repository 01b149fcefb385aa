"""Fixture for tests/resilience/: a slow function behind host.json throttles
(maxConcurrentRequests 2, no outstanding cap)."""

import asyncio

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="slow", methods=["GET"])
async def slow(req: func.HttpRequest) -> str:
    await asyncio.sleep(float(req.params.get("s", "1")))
    return "done"
