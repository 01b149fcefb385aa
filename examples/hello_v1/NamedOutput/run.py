"""Custom script file and entry point, and an HTTP output binding with a name."""
import azure.functions as func


def handle(request: func.HttpRequest, res: func.Out[func.HttpResponse]) -> None:
    res.set(func.HttpResponse(request.get_body(), status_code=202, mimetype="application/octet-stream"))
