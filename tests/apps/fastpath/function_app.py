"""Functions that exercise every part of an HTTP invocation, run twice by tests/fastpath.rs
(on runtime 1.3.0 here, on the bundled runtime through tests/apps/fastpath_bundled):
through the worker's Datum fast path and through the runtime's protobuf entry. Both
answers must be the same."""
import json
import logging
import sys

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _request(req: func.HttpRequest) -> dict:
    return {
        "method": req.method,
        "url": req.url,
        "headers": {k: v for k, v in sorted(req.headers.items()) if k.startswith("x-")},
        "params": dict(sorted(req.route_params.items())),
        "query": dict(sorted(req.params.items())),  # a map: no order on the wire
        "body": req.get_body().decode("latin-1"),
    }


@app.route(route="hello")
async def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"Hello, {req.params.get('name', 'world')}!")


@app.route(route="echo/{id}", methods=["GET", "POST", "PUT"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    """Sync: every request field back, a status and headers of its own."""
    return func.HttpResponse(json.dumps(_request(req)), status_code=201,
                             headers={"X-Echo": "yes"}, mimetype="application/json")


@app.route(route="aecho/{id}", methods=["GET", "POST"])
async def aecho(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(_request(req)), status_code=202, mimetype="application/json")


@app.route(route="binary")
async def binary(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(bytes(range(256)) * 4, mimetype="application/octet-stream")


@app.route(route="cookies")
def cookies(req: func.HttpRequest) -> func.HttpResponse:
    headers = func.HttpResponse(status_code=204).headers
    headers.add("Set-Cookie", "a=1; Path=/; HttpOnly")
    headers.add("Set-Cookie", "b=2 3; Max-Age=60; SameSite=Lax")
    headers.add("Set-Cookie", 'c="x y"; Expires=Sat, 05 Jun 2027 10:18:14 GMT; Domain=example.com; Secure')
    return func.HttpResponse(status_code=204, headers=headers)


@app.route(route="fails")
async def fails(req: func.HttpRequest) -> func.HttpResponse:
    raise ValueError("no such thing")


@app.route(route="sync_fails")
def sync_fails(req: func.HttpRequest) -> func.HttpResponse:
    raise KeyError("missing")


@app.route(route="returns_str")
def returns_str(req: func.HttpRequest) -> str:
    return "plain"


@app.route(route="logs")
async def logs(req: func.HttpRequest) -> func.HttpResponse:
    logging.warning("user log from %s", req.params.get("who", "nobody"))
    return func.HttpResponse("logged")


@app.route(route="context")
def context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    body = {
        "function_name": context.function_name,
        "invocation_id_ok": len(context.invocation_id) == 36,
        "thread_invocation_id_ok": context.thread_local_storage.invocation_id == context.invocation_id,
        # Sluice's span is new per request: its trace id (the client's) and the tracestate
        # are what both paths must carry alike.
        "trace_id": context.trace_context.trace_parent.split("-")[1],
        "span_id_ok": len(context.trace_context.trace_parent.split("-")[2]) == 16,
        "trace_state": context.trace_context.trace_state,
        "invocation_attribute_ok": (context.trace_context.attributes.get("faas.invocation_id")
                                    == context.invocation_id),
        "retry_count": context.retry_context.retry_count,
        "max_retry_count": context.retry_context.max_retry_count,
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="path")
async def path(req: func.HttpRequest) -> func.HttpResponse:
    """Which worker code path called this function (the one answer allowed to differ)."""
    frame, names = sys._getframe(), []
    while frame is not None:
        names.append(frame.f_globals.get("__name__", ""))
        frame = frame.f_back
    return func.HttpResponse("datum" if "sluice_worker.fastpath" in names else "protobuf")


@app.route(route="which_runtime")
def runtime_version(req: func.HttpRequest) -> func.HttpResponse:
    """The runtime library version invoking the functions (the one the worker loaded)."""
    return func.HttpResponse(sys.modules["azure_functions_runtime.version"].VERSION)
