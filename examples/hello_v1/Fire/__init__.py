"""An HTTP trigger with no HTTP output binding: the host answers 204 with an empty body."""
import logging

import azure.functions as func


def main(req: func.HttpRequest) -> None:
    logging.info("fired %s", req.get_body().decode())
