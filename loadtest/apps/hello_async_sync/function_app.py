"""Load-test fixture: the same hello as a plain `def` and as an `async def`.

Both return the same 13-byte body as loadtest/asgi_hello.py and the raw hyper
ceiling, so the runner compares servers, not payloads. `async_hello` does no
I/O on purpose: it measures the async dispatch path itself (examples/hello's
`async_hello` sleeps 10 ms and would measure the sleep).
"""

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="sync_hello", methods=["GET"])
def sync_hello(req: func.HttpRequest) -> str:
    return "Hello, world!"


@app.route(route="async_hello", methods=["GET"])
async def async_hello(req: func.HttpRequest) -> str:
    return "Hello, world!"
