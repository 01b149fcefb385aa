"""Pins its own azure-functions, protobuf and grpcio (each different from the worker's) and
reports the versions its code sees (dependency isolation tests)."""
import json
import os

import azure.functions as func
import google.protobuf
import grpc

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="versions")
def versions(req: func.HttpRequest) -> func.HttpResponse:
    body = {
        "azure-functions": func.__version__,
        "protobuf": google.protobuf.__version__,
        "grpcio": grpc.__version__,
        "pid": os.getpid(),
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")
