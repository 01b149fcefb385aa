"""Fixture for tests/bodies.rs and loadtest/bodies.sh: large bodies over the classic
(gRPC) path. `sha` hashes the request body, `generate` makes a body of the asked size and
names its SHA-256 in a header, `echo` returns the request body (round trips), `zeros`
answers the asked number of zero bytes (a download whose making costs next to nothing)."""

import hashlib
import os

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="sha", methods=["POST"])
def sha(req: func.HttpRequest) -> func.HttpResponse:
    body = req.get_body()
    return func.HttpResponse(
        hashlib.sha256(body).hexdigest(), headers={"x-length": str(len(body))})


@app.route(route="generate", methods=["GET"])
def generate(req: func.HttpRequest) -> func.HttpResponse:
    body = os.urandom(int(req.params["bytes"]))
    return func.HttpResponse(
        body, mimetype="application/octet-stream",
        headers={"x-sha256": hashlib.sha256(body).hexdigest()})


@app.route(route="echo", methods=["POST"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body(), mimetype="application/octet-stream")


@app.route(route="zeros", methods=["GET"])
def zeros(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(bytes(int(req.params["bytes"])), mimetype="application/octet-stream")
