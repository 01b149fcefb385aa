"""A project as the Functions tooling lays it out: the app in function_app.py, HTTP
functions in a blueprint, a timer function beside them, host.json with an extension
bundle and a local.settings.json (tests/project.rs rewrites its port)."""

import azure.functions as func
from http_blueprint import bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(bp)


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False)
def cleanup(timer: func.TimerRequest) -> None:
    pass
