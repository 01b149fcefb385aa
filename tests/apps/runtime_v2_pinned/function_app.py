"""Reports the platform runtime library that runs it (runtime version control tests)."""
import json
import sys

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="whichruntime")
def runtime(req: func.HttpRequest) -> func.HttpResponse:
    module = sys.modules["azure_functions_runtime"]
    body = {"package": "azure-functions-runtime", "version": module.version.VERSION, "file": module.__file__}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")
