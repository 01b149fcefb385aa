"""Plain ASGI twin of tests/apps/bodies for loadtest/bodies.py, served by uvicorn and granian:
`POST /api/sha` reads the body whole and answers its SHA-256 (hex), `GET /api/zeros?bytes=N`
answers N zero bytes. No framework: the baseline is the server itself.
"""
import hashlib
from urllib.parse import parse_qs

from asgi_hello import lifespan, read_body


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    if path == "/api/sha" and method == "POST":
        # Read whole, as a function's req.get_body() does.
        body = hashlib.sha256(await read_body(receive)).hexdigest().encode()
        await respond(send, body, b"text/plain; charset=utf-8")
    elif path == "/api/zeros" and method == "GET":
        size = int(parse_qs(scope["query_string"].decode()).get("bytes", ["0"])[0])
        await respond(send, bytes(size), b"application/octet-stream")
    else:
        await respond(send, b"", b"text/plain", status=404)


async def respond(send, body, content_type, status=200):
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
