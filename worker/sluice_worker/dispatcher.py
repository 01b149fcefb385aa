"""Routes each inbound StreamingMessage to the platform runtime library and sends its
answer back. Every request runs as its own asyncio task, so a slow invocation never
blocks the stream; responses may go out of order (Sluice correlates by id).

The runtime library is picked as the platform does for Python 3.13+: v2
(`azure_functions_runtime`) when the app has its script file (function_app.py or
PYTHON_SCRIPT_FILE_NAME), else v1 (`azure_functions_runtime_v1`).

A placeholder worker (WEBSITE_PLACEHOLDER_MODE=1) initialises the v2 runtime against
the empty placeholder app, so the runtime and the SDK are imported before any app is
known; FunctionEnvironmentReloadRequest then specialises it for the assigned app.
"""
import asyncio
import gc
import importlib
import logging
import os
import sys
import traceback

from . import fastpath, isolation
from .logs import invocation_id_cv
from .protos import protos

log = logging.getLogger("sluice_worker")


class _Request:
    """The shape the runtime's handlers expect: `.request` is the StreamingMessage,
    `.properties` carries the protos module and the host address."""

    __slots__ = ("name", "request", "properties")

    def __init__(self, name, request, properties):
        self.name = name
        self.request = request
        self.properties = properties


PLACEHOLDER_MODE = "WEBSITE_PLACEHOLDER_MODE"
V2 = "azure_functions_runtime"
V1 = "azure_functions_runtime_v1"


def runtime_package(app_dir: str, env=os.environ) -> str:
    script = env.get("PYTHON_SCRIPT_FILE_NAME") or "function_app.py"
    if os.path.isfile(os.path.join(app_dir, script)):
        return V2
    return V1


def _version(module) -> str:
    """The distribution version, from the .dist-info next to the package (cheaper at
    start-up than importlib.metadata, which scans every path entry)."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(module.__file__ or "")))
    found = isolation._dist_version(package_dir, module.__name__)
    if found:
        return found
    import importlib.metadata  # not where pip put it: ask the slow, general way
    try:
        return importlib.metadata.version(module.__name__.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return getattr(module, "__version__", "unknown")


def describe_runtime(module, app_site=None) -> dict:
    """Name, version and source (app / bundled) of the runtime that was imported."""
    dist = module.__name__.replace("_", "-")
    app_site = app_site if app_site is not None else os.environ.get("SLUICE_APP_SITE")
    origin = os.path.abspath(getattr(module, "__file__", "") or "")
    source = "app" if app_site and origin.startswith(os.path.abspath(app_site) + os.sep) else "bundled"
    return {"sluice.runtime.package": dist, "sluice.runtime.version": _version(module),
            "sluice.runtime.source": source}


def registered_extensions() -> str:
    """Worker extensions the app registered (azure.functions extension base classes),
    as the SDK describes them; "" when none. The platform ignores them on 3.13+."""
    ext = sys.modules.get("azure.functions.extension")
    meta = getattr(ext, "ExtensionMeta", None)
    if meta is None or not getattr(meta, "_info", None):
        return ""
    return meta.get_registered_extensions_json()


def route_http_server_logs() -> None:
    """An http-v2 app runs uvicorn on this loop (the runtime starts it during init and
    advertises HttpUri). uvicorn logs to stderr with its own handlers, which the host
    would relay as warnings; send its records through the RpcLog handler instead, and
    drop its per-request access lines (Sluice logs requests itself)."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def complete_opentelemetry_setup(runtime) -> None:
    """With PYTHON_ENABLE_OPENTELEMETRY=true (and no Azure Monitor), runtime libraries before
    azure-functions-runtime 1.3.0 (the bundled 1.2.1; v1 1.1.0) mark OpenTelemetry as
    available but never import the W3C propagator (only the Azure Monitor path does), so
    every invocation would fail in `configure_opentelemetry` with "'NoneType' object has no
    attribute 'extract'" before the function runs. Import it the runtime's own way, once,
    when it is missing (1.3.0 does it itself: then nothing happens here)."""
    otel = sys.modules.get(runtime.__name__ + ".otel")
    manager = getattr(otel, "otel_manager", None)
    try:
        if (manager is not None and manager.get_otel_libs_available()
                and manager.get_trace_context_propagator() is None):
            otel.update_opentelemetry_status()
    except AttributeError:  # a runtime laid out otherwise: it sets itself up
        pass


def _failure(exc: BaseException):
    return protos.StatusResult(
        status=protos.StatusResult.Failure,
        exception=protos.RpcException(
            message=f"{type(exc).__name__}: {exc}",
            stack_trace="".join(traceback.format_exception(exc)),
        ),
    )


class Dispatcher:
    def __init__(self, loop: asyncio.AbstractEventLoop, transport, host: str, log_handler):
        self._loop = loop
        self._log_handler = log_handler
        self._transport = transport
        self._send = transport.send
        self._fastpath = None
        self._properties = {"protos": protos, "host": host}
        self._runtime = None
        self._runtime_info: dict = {}
        self._init_message = None
        self._tasks: set = set()

    @property
    def runtime(self):
        return self._runtime

    def on_message(self, message) -> None:
        """Called on the event loop for each inbound message."""
        kind = message.WhichOneof("content")
        if kind == "worker_status_request":
            # Answered at once and echoing request_id: Sluice matches pings on it.
            self._send(protos.StreamingMessage(
                request_id=message.request_id,
                worker_status_response=protos.WorkerStatusResponse()))
            return
        handler = getattr(self, "_on_" + (kind or "none"), None)
        if handler is None:
            log.warning("unknown StreamingMessage content: %s", kind)
            return
        task = self._loop.create_task(handler(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def on_invocation(self, *fields) -> None:
        """Called on the event loop for each invocation the transport decoded itself
        (only for functions `fastpath` enabled)."""
        fastpath.start(self._loop, self._fastpath.invoke(*fields), self._tasks)

    def stop(self) -> None:
        """The stream has ended; called before the loop winds down."""
        if self._fastpath is not None:
            self._fastpath.cancel_queued()

    def _reply(self, request, **content) -> None:
        self._send(protos.StreamingMessage(request_id=request.request_id, **content))

    def _wrap(self, name, message) -> _Request:
        return _Request(name, message, self._properties)

    async def _on_worker_init_request(self, message) -> None:
        app_dir = message.worker_init_request.function_app_directory or os.getcwd()
        self._init_message = message
        placeholder = os.environ.get(PLACEHOLDER_MODE) == "1"
        try:
            self._runtime = importlib.import_module(V2 if placeholder else runtime_package(app_dir))
            if placeholder:
                importlib.import_module("azure.functions")  # what every app imports first
            self._runtime_info = describe_runtime(self._runtime)
            self._log_handler.runtime_cv = getattr(self._runtime, "invocation_id_cv", None)
        except Exception as exc:  # no runtime library: report, the host decides what to do
            self._reply(message, worker_init_response=protos.WorkerInitResponse(result=_failure(exc)))
            return
        response = await self._runtime.worker_init_request(self._wrap("worker_init_request", message))
        response.worker_metadata.custom_properties.update(self._runtime_info)
        extensions = registered_extensions()
        if extensions:
            response.worker_metadata.custom_properties["sluice.worker_extensions"] = extensions
        if response.result.status == protos.StatusResult.Success:
            complete_opentelemetry_setup(self._runtime)
            self._runtime.start_threadpool_executor()
            self._fastpath = fastpath.FastPath.load(self._runtime, self._transport)
        if "HttpUri" in response.capabilities:
            # The server task configures uvicorn's logging on its first step, which is
            # already queued on the loop: re-route right after it.
            self._loop.call_soon(route_http_server_logs)
        self._reply(message, worker_init_response=response)

    async def _on_functions_metadata_request(self, message) -> None:
        response = await self._runtime.functions_metadata_request(self._wrap("functions_metadata_request", message))
        self._reply(message, function_metadata_response=response)

    async def _on_function_load_request(self, message) -> None:
        response = await self._runtime.function_load_request(self._wrap("function_load_request", message))
        if response.result.status == protos.StatusResult.Success:
            if self._fastpath is not None:
                self._fastpath.enable(message.function_load_request.function_id)
            # What start-up built (runtime, SDK, app) lives as long as the worker: keep it
            # out of the collector's reach, so a full collection under load walks only
            # what requests allocate (over the SDK's start-up heap alone one took ~9 ms).
            gc.freeze()
        self._reply(message, function_load_response=response)

    async def _on_invocation_request(self, message) -> None:
        invocation_id_cv.set(message.invocation_request.invocation_id)
        try:
            response = await self._runtime.invocation_request(self._wrap("invocation_request", message))
        except Exception as exc:  # the runtime itself failed: still answer, never leave it hanging
            response = protos.InvocationResponse(
                invocation_id=message.invocation_request.invocation_id, result=_failure(exc))
        self._reply(message, invocation_response=response)

    async def _on_function_environment_reload_request(self, message) -> None:
        """Specialises a placeholder worker: app-first import path, the app's runtime
        library (initialised against the placeholder if it was not the one in use),
        then the runtime replaces os.environ and indexes the app; the thread pool is
        restarted afterwards so the app's PYTHON_THREADPOOL_THREAD_COUNT applies."""
        reload = message.function_environment_reload_request
        env = dict(reload.environment_variables)
        app_dir = reload.function_app_directory or os.getcwd()
        app_site = env.get("SLUICE_APP_SITE", "")
        if self._fastpath is not None:  # the app is replaced: its functions are reloaded
            self._transport.disable_invocations()
            self._fastpath = None
        try:
            here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            previous = [os.environ.get("FUNCTIONS_APPLICATION_DIRECTORY", ""), os.getcwd(),
                        os.environ.get("SLUICE_APP_SITE", "")]
            isolation.app_first(app_dir, app_site, env.get("SLUICE_WORKER_SITE", ""), here,
                                previous=[p for p in previous if p], reuse_same=True)
            runtime = importlib.import_module(runtime_package(app_dir, env))
            if runtime is not self._runtime:
                if self._init_message is not None:
                    await runtime.worker_init_request(self._wrap("worker_init_request", self._init_message))
                self._runtime = runtime
                self._log_handler.runtime_cv = getattr(runtime, "invocation_id_cv", None)
            self._runtime_info = describe_runtime(runtime, app_site)
        except Exception as exc:
            self._reply(message, function_environment_reload_response=protos.FunctionEnvironmentReloadResponse(
                result=_failure(exc)))
            return
        response = await self._runtime.function_environment_reload_request(
            self._wrap("function_environment_reload_request", message))
        if response.result.status == protos.StatusResult.Success:
            complete_opentelemetry_setup(self._runtime)
            self._runtime.start_threadpool_executor()
            self._fastpath = fastpath.FastPath.load(self._runtime, self._transport)
            response.worker_metadata.custom_properties.update(self._runtime_info)
            extensions = registered_extensions()
            if extensions:
                response.worker_metadata.custom_properties["sluice.worker_extensions"] = extensions
        self._reply(message, function_environment_reload_response=response)

    async def _on_worker_terminate(self, message) -> None:
        sys.stdout.flush()
        os._exit(0)
