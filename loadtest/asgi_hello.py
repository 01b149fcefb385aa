"""Plain ASGI twin of the Sluice fixture app, served by uvicorn and granian in loadtest/run.sh.

Same routes and the same 13-byte body as apps/hello_async_sync (the ASGI callable is
async, so /api/sync_hello and /api/async_hello are the same code path here), plus
/api/binary_echo (POST body back) so the k6 large-body script can run against it too.
No framework: the baseline is the server itself.
"""

BODY = b"Hello, world!"
HELLO_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(BODY)).encode()),
]
HELLO_PATHS = {"/api/hello", "/api/sync_hello", "/api/async_hello"}


async def lifespan(receive, send):
    """Acknowledges start-up and shutdown (shared with bodies_asgi.py)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive) -> bytes:
    """The request body, read whole (shared with bodies_asgi.py)."""
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path in HELLO_PATHS and method == "GET":
        await send({"type": "http.response.start", "status": 200, "headers": HELLO_HEADERS})
        await send({"type": "http.response.body", "body": BODY})
    elif path == "/api/binary_echo" and method == "POST":
        body = await read_body(receive)
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
