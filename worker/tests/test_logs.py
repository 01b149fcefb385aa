"""Python log records become RpcLog messages: level, category, system or user, the
invocation they belong to, and the traceback of an exception."""
import logging

from sluice_worker.logs import RpcLogHandler, invocation_id_cv
from sluice_worker.protos import protos


def emitted(name, level, message, exc_info=None, invocation=None):
    sent = []
    handler = RpcLogHandler(sent.append)
    record = logging.LogRecord(name, level, __file__, 1, message, (), exc_info)
    token = invocation_id_cv.set(invocation)
    try:
        handler.emit(record)
    finally:
        invocation_id_cv.reset(token)
    assert len(sent) == 1
    return sent[0].rpc_log


def test_a_user_warning_in_an_invocation():
    log = emitted("my_app", logging.WARNING, "careful", invocation="inv-1")
    assert (log.level, log.log_category) == (protos.RpcLog.Warning, protos.RpcLog.User)
    assert (log.category, log.message, log.invocation_id) == ("my_app", "careful", "inv-1")


def test_the_runtime_logs_as_system_and_levels_map_down():
    log = emitted("azure.functions.worker", 5, "fine detail")
    assert (log.level, log.log_category) == (protos.RpcLog.Trace, protos.RpcLog.System)
    assert emitted("x", logging.CRITICAL, "m").level == protos.RpcLog.Critical


def test_an_exception_carries_its_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        log = emitted("my_app", logging.ERROR, "failed", exc_info=sys.exc_info())
    assert log.message.startswith("failed\nTraceback")
    assert log.message.endswith("ValueError: boom")
