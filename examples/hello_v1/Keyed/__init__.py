"""No authLevel in function.json: the platform default is "function" (a key is required)."""
import azure.functions as func


def main(req: func.HttpRequest) -> str:
    return "keyed"
