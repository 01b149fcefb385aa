"""Fixture for tests/tracing.rs: an app that uses the OpenTelemetry SDK itself, as the
platform's docs describe (PYTHON_ENABLE_OPENTELEMETRY=true, the app brings the SDK and an
exporter). Its exporter is the SDK's in-memory one, so each function can report the span it
made: the test checks that span's trace id and parent against what the client sent and what
Sluice logged, i.e. that the runtime attached the trace context Sluice sent."""
import json
import logging
import sys

import azure.functions as func
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("sluice-tracing-test")

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _worker_path() -> str:
    """Which worker code path called the function (meaningful for async functions, which
    run on the calling stack): the Datum fast path or the runtime's protobuf entry."""
    frame, names = sys._getframe(), []
    while frame is not None:
        names.append(frame.f_globals.get("__name__", ""))
        frame = frame.f_back
    return "datum" if "sluice_worker.fastpath" in names else "protobuf"


def _report(context: func.Context, name: str) -> func.HttpResponse:
    with tracer.start_as_current_span(name) as span:
        logging.info("inside the app's span %s", name)
        made = span.get_span_context()
    finished = [s for s in exporter.get_finished_spans() if s.context.span_id == made.span_id]
    recorded = finished[0] if finished else None
    body = {
        "trace_parent": context.trace_context.trace_parent,
        "trace_state": context.trace_context.trace_state,
        "attributes": dict(context.trace_context.attributes),
        "invocation_id": context.invocation_id,
        "path": _worker_path(),
        "span": {
            "trace_id": format(made.trace_id, "032x"),
            "span_id": format(made.span_id, "016x"),
            "sampled": made.trace_flags.sampled,
            "recorded": recorded is not None,
            "parent_span_id": (format(recorded.parent.span_id, "016x")
                               if recorded is not None and recorded.parent else None),
        },
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="async_span")
async def async_span(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return _report(context, "async work")


@app.route(route="sync_span")
def sync_span(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return _report(context, "sync work")


@app.route(route="log")
async def log(req: func.HttpRequest) -> func.HttpResponse:
    """For the log tests: one record at INFO with a word that is easy to find."""
    logging.info("x-marks-the-spot %s", req.params.get("n", "0"))
    return func.HttpResponse("logged")
