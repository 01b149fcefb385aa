"""Which platform runtime library runs this app, and which copy."""
import json
import sys

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    module = sys.modules["azure_functions_runtime_v1"]
    body = {"package": "azure-functions-runtime-v1", "version": module.version.VERSION, "file": module.__file__}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")
