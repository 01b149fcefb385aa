"""Takes a few seconds to import, so a test can see Sluice before any worker is ready."""
import time

import azure.functions as func

time.sleep(3)

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello")
def hello(req: func.HttpRequest) -> str:
    return "ready now"
