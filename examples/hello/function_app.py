"""Example Azure Functions app (v2 decorator model) served by Sluice.

Every function here is exercised by the end-to-end tests in tests/e2e.rs;
see examples/README.md for how to call each one with curl.
"""

import asyncio
import json
import logging
import os

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello", methods=["GET"])
def hello(req: func.HttpRequest) -> str:
    name = req.params.get("name", "world")
    return f"Hello, {name}!"


@app.route(route="greeting", methods=["GET"])
def greeting(req: func.HttpRequest) -> str:
    # GREETING comes from local.settings.json (an environment variable set beforehand wins).
    return os.environ.get("GREETING", "no GREETING setting")


@app.route(route="respond")
def respond(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        "<greeting>created</greeting>",
        status_code=201,
        headers={"x-custom": "yes", "Set-Cookie": "session=abc; Path=/; HttpOnly"},
        mimetype="application/xml",
        charset="utf-8",
    )


@app.route(route="items/{id:int}", methods=["GET"])
def get_item(req: func.HttpRequest) -> func.HttpResponse:
    item_id = int(req.route_params["id"])
    return func.HttpResponse(json.dumps({"id": item_id}), mimetype="application/json")


@app.route(route="echo_headers")
def echo_headers(req: func.HttpRequest) -> func.HttpResponse:
    headers = {key.lower(): value for key, value in req.headers.items()}
    return func.HttpResponse(json.dumps(headers), mimetype="application/json")


@app.route(route="json_echo", methods=["POST"])
def json_echo(req: func.HttpRequest) -> func.HttpResponse:
    try:
        payload = req.get_json()
    except ValueError:
        return func.HttpResponse("body must be JSON", status_code=400)
    if not isinstance(payload, dict):
        return func.HttpResponse("body must be a JSON object", status_code=400)
    payload["echoed"] = True
    return func.HttpResponse(json.dumps(payload), mimetype="application/json")


@app.route(route="binary_echo", methods=["POST"])
def binary_echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        req.get_body(),
        mimetype="application/octet-stream",
        headers={"x-worker-pid": str(os.getpid())},
    )


@app.route(route="async_hello", methods=["GET"])
async def async_hello(req: func.HttpRequest) -> str:
    await asyncio.sleep(0.01)
    return "Hello from async!"


@app.route(route="sync_hello", methods=["GET"])
def sync_hello(req: func.HttpRequest) -> str:
    return "Hello from sync!"


@app.route(route="fail")
def fail(req: func.HttpRequest) -> str:
    raise ValueError("intentional failure marker-fail-42")


@app.route(route="log_marker")
def log_marker(req: func.HttpRequest) -> str:
    logging.info("marker-123")
    return "logged"


@app.route(route="secure", auth_level=func.AuthLevel.FUNCTION)
def secure(req: func.HttpRequest) -> str:
    return "secret"


# Not "adminonly": the host rejects every route that starts with "admin" or "runtime".
@app.route(route="privileged", auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> str:
    return "admin"


@app.route(route="whoami", methods=["GET"])
def whoami(req: func.HttpRequest) -> str:
    return str(os.getpid())


@app.route(route="whichruntime", methods=["GET"])
def runtime(req: func.HttpRequest) -> func.HttpResponse:
    """Which platform runtime library runs this app, and which copy (see the README)."""
    import sys

    module = sys.modules["azure_functions_runtime"]
    body = {"package": "azure-functions-runtime", "version": module.version.VERSION, "file": module.__file__}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")
