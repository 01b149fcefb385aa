"""Fixture for tests/streaming.rs: an unmodified http-v2 (FastAPI streaming) app, as the
platform's docs write them. The function takes a FastAPI Request and returns a
StreamingResponse; Sluice forwards the raw HTTP request to the worker's own server."""

import asyncio
import hashlib
import json
import os

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, StreamingResponse

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="ticks", methods=[func.HttpMethod.GET])
async def ticks(req: Request) -> StreamingResponse:
    """A chunk every `ms` milliseconds, `n` of them."""
    n = int(req.query_params.get("n", "20"))
    delay = int(req.query_params.get("ms", "100")) / 1000

    async def chunks():
        for i in range(n):
            yield f"chunk-{i:02}\n".encode()
            await asyncio.sleep(delay)

    return StreamingResponse(chunks(), media_type="text/plain", headers={"x-ticks": str(n)})


@app.route(route="sha", methods=[func.HttpMethod.POST])
async def sha(req: Request) -> StreamingResponse:
    """Hashes the request body as it streams in."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in req.stream():
        digest.update(chunk)
        size += len(chunk)

    async def answer():
        yield digest.hexdigest().encode()

    return StreamingResponse(answer(), media_type="text/plain", headers={"x-length": str(size)})


@app.route(route="flood", methods=[func.HttpMethod.GET])
async def flood(req: Request) -> StreamingResponse:
    """`mb` MiB of data, produced only as fast as it is consumed."""
    total = int(req.query_params.get("mb", "1"))
    block = os.urandom(1 << 20)

    async def blocks():
        for _ in range(total):
            yield block

    return StreamingResponse(blocks(), media_type="application/octet-stream")


@app.route(route="zeros", methods=[func.HttpMethod.GET])
async def zeros(req: Request) -> StreamingResponse:
    """`bytes` zero bytes, in blocks of 1 MiB (the download of loadtest/bodies.py)."""
    total = int(req.query_params["bytes"])
    block = bytes(min(total, 1 << 20))

    async def blocks():
        left = total
        while left:
            yield block if left >= len(block) else block[:left]
            left -= min(left, len(block))

    return StreamingResponse(blocks(), media_type="application/octet-stream")


@app.route(route="items/{id:int}", methods=[func.HttpMethod.GET])
async def item(req: Request) -> StreamingResponse:
    """Route parameters reach the FastAPI request; status and headers pass through."""
    ident = req.path_params["id"]

    async def body():
        yield f"item {ident} q={req.query_params.get('q', '')}".encode()

    return StreamingResponse(body(), status_code=201, media_type="text/plain",
                             headers={"x-item": str(ident)})


@app.route(route="boom", methods=[func.HttpMethod.GET])
async def boom(req: Request) -> StreamingResponse:
    raise RuntimeError("boom")


@app.route(route="trace_headers", methods=[func.HttpMethod.GET])
async def trace_headers(req: Request) -> StreamingResponse:
    """The trace headers the forwarded request carried (tests/tracing.rs)."""
    seen = {name: req.headers.get(name) for name in ("traceparent", "tracestate", "x-ms-invocation-id")}

    async def body():
        yield json.dumps(seen).encode()

    return StreamingResponse(body(), media_type="application/json")


@app.route(route="peer", methods=[func.HttpMethod.GET])
async def peer(req: Request) -> StreamingResponse:
    """The port the forwarded request came from, i.e. which of Sluice's connections to this
    server carried it (tests/streaming.rs); `close=1` has the server close it afterwards."""
    headers = {"connection": "close"} if req.query_params.get("close") else {}

    async def body():
        yield str(req.client.port).encode()

    return StreamingResponse(body(), media_type="text/plain", headers=headers)
