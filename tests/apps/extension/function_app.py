"""Registers an application-level worker extension (not supported on Python 3.13+: the app
must still run, and Sluice says once that the extension is ignored)."""
import azure.functions as func
from azure.functions import AppExtensionBase


class RequestCounter(AppExtensionBase):
    calls = 0

    @classmethod
    def init(cls):
        cls.calls = 0

    @classmethod
    def configure(cls, *args, **kwargs):
        pass

    @classmethod
    def pre_invocation_app_level(cls, logger, context, func_args=None, *args, **kwargs):
        cls.calls += 1


app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello")
def hello(req: func.HttpRequest) -> str:
    return "hello despite the extension"
