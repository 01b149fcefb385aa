"""Fixture for tests/resilience/: an app that fails while being imported."""

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello", methods=["GET"])
def hello(req: func.HttpRequest) -> str:
    return "unreachable"


raise RuntimeError("import boom marker-imp-7")
