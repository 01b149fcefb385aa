"""Python logging → RpcLog messages, so function logs reach Sluice labelled with the
invocation they belong to. The invocation id comes from the runtime's context variable
(set for sync and async functions alike) or, failing that, from our own."""
import contextvars
import logging
import os
import traceback

from .protos import protos

invocation_id_cv: contextvars.ContextVar = contextvars.ContextVar("sluice_invocation_id", default=None)

_LEVELS = (
    (logging.CRITICAL, protos.RpcLog.Critical),
    (logging.ERROR, protos.RpcLog.Error),
    (logging.WARNING, protos.RpcLog.Warning),
    (logging.INFO, protos.RpcLog.Information),
    (logging.DEBUG, protos.RpcLog.Debug),
)
# Loggers of the runtime and of this worker are system logs; everything else is the user's.
_SYSTEM_PREFIXES = ("azure.functions", "azure_functions", "sluice_worker")


def _rpc_level(levelno: int) -> int:
    for threshold, level in _LEVELS:
        if levelno >= threshold:
            return level
    return protos.RpcLog.Trace


def quiet_system_loggers() -> None:
    """The runtime logs every invocation at INFO ("Function name: …"); Sluice prints
    system records below WARNING only at debug level, so unless debug logging is asked
    for (PYTHON_ENABLE_DEBUG_LOGGING, as on the platform, or SLUICE_LOG mentioning
    debug), such records are not even created."""
    if os.environ.get("PYTHON_ENABLE_DEBUG_LOGGING", "").lower() in ("1", "true"):
        return
    if "debug" in os.environ.get("SLUICE_LOG", "").lower():
        return
    for name in ("azure.functions", "azure_functions_worker", "sluice_worker"):
        logging.getLogger(name).setLevel(logging.WARNING)


class RpcLogHandler(logging.Handler):
    def __init__(self, send):
        super().__init__()
        self._send = send
        # The runtime's own context variable, known once the runtime is imported.
        self.runtime_cv = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            invocation_id = (self.runtime_cv.get() if self.runtime_cv else None) or invocation_id_cv.get() or ""
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            system = record.name.startswith(_SYSTEM_PREFIXES)
            self._send(protos.StreamingMessage(rpc_log=protos.RpcLog(
                invocation_id=invocation_id,
                category=record.name,
                level=_rpc_level(record.levelno),
                message=message,
                log_category=protos.RpcLog.System if system else protos.RpcLog.User,
            )))
        except Exception:  # logging must never break the function that logged
            self.handleError(record)
