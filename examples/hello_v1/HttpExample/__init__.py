"""A v1 (function.json) HTTP function: route parameter in, HttpResponse out."""
import logging

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name")
    logging.info("v1 greeting %s", name)
    return func.HttpResponse(f"Hello, {name} (v1)!", status_code=200)
