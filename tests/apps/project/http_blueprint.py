import json
import os

import azure.functions as func

bp = func.Blueprint()


@bp.route(route="settings", methods=["GET", "PUT"])
def settings(req: func.HttpRequest) -> func.HttpResponse:
    names = ["MY_SETTING", "SHADOWED", "NUMBER", "ConnectionStrings:Db"]
    seen = {name: os.environ.get(name) for name in names}
    return func.HttpResponse(json.dumps(seen), mimetype="application/json")
