"""Invocations without protobuf on the worker's Python thread.

The native transport decodes an InvocationRequest in Rust straight into the runtime's own
`Datum`s and encodes the InvocationResponse from the `Datum`s the function produced; this
module runs the invocation between the two exactly as the runtime's
`handle_event.invocation_request` does (same context, logs, binding conversions, thread
pool, errors), with the runtime's own helpers. It runs on the runtime versions whose
`invocation_request` it mirrors: 1.3.0 and later (the ones that declare a protobuf-free seam,
`native_invocation`), and 1.2.1 (the bundled default), which differs only in where it sets
up the invocation context and OpenTelemetry. With another runtime, with the grpcio
transport, or with SLUICE_WORKER_FASTPATH=0 every invocation takes the runtime's protobuf
entry instead.

A function qualifies when nothing in its invocation needs the protobuf message itself:
not an http-v2 (streaming) function, no service-bus settlement client, no deferred
(SDK-type) input bindings.
"""
import asyncio
import importlib
import os
import sys

from .logs import invocation_id_cv
from .protos import protos

ENABLE = "SLUICE_WORKER_FASTPATH"
# What `invoke` uses from the runtime's handle_event module.
_RUNTIME_NAMES = ("_functions", "get_context", "otel_manager", "configure_opentelemetry",
                  "logger", "is_trigger_binding", "Out", "execute_async", "get_current_loop",
                  "get_threadpool_executor", "run_sync_func", "serialize_exception",
                  "HttpV2Registry")
# Older runtime versions whose `invocation_request` `invoke` mirrors too (checked line by line
# against 1.3.0): their context is made after the input bindings, and OpenTelemetry is set
# up just before an async function runs (a sync one's `run_sync_func` does it itself).
_CONTEXT_AFTER_BINDINGS = {"1.2.1"}


class _Trace:
    __slots__ = ("trace_parent", "trace_state", "attributes")

    def __init__(self, trace_parent, trace_state, attributes):
        self.trace_parent = trace_parent
        self.trace_state = trace_state
        self.attributes = attributes


class _Retry:
    __slots__ = ("retry_count", "max_retry_count", "exception")

    def __init__(self, retry_count, max_retry_count):
        self.retry_count = retry_count
        self.max_retry_count = max_retry_count
        # What the protobuf message holds when the host sent no exception.
        self.exception = protos.RpcException()


class _Request:
    """The fields of an InvocationRequest that the runtime's `get_context` reads."""
    __slots__ = ("invocation_id", "trace_context", "retry_context")

    def __init__(self, invocation_id, trace_context, retry_context):
        self.invocation_id = invocation_id
        self.trace_context = trace_context
        self.retry_context = retry_context


class FastPath:
    def __init__(self, handle_event, meta, datumdef, transport, context_after_bindings=False):
        self._rt = handle_event
        self._context_after_bindings = context_after_bindings
        self._get_binding = meta.get_binding
        self._get_datum = meta.get_datum
        self._datum_cls = datumdef.Datum
        self._datum_as_proto = datumdef.datum_as_proto
        self._transport = transport
        self._send_bytes = transport.send_bytes
        self._encode = transport.encode_invocation_response
        # Sync invocations handed to the thread pool and not yet back (`_in_thread`).
        self._working = set()

    @classmethod
    def load(cls, runtime, transport):
        """The fast path for `runtime` over `transport`, or None where it cannot run."""
        if os.environ.get(ENABLE, "1") == "0" or not hasattr(transport, "enable_invocations"):
            return None
        name = runtime.__name__
        try:
            # A runtime that declares a protobuf-free seam (1.3.0 on, v2) invokes as `invoke`
            # does; of the older ones, only the versions checked against it.
            try:
                importlib.import_module(name + ".native_invocation")
                legacy = False
            except ImportError:
                version = getattr(importlib.import_module(name + ".version"), "VERSION", None)
                if version not in _CONTEXT_AFTER_BINDINGS:
                    return None
                legacy = True
            handle_event = importlib.import_module(name + ".handle_event")
            meta = importlib.import_module(name + ".bindings.meta")
            datumdef = importlib.import_module(name + ".bindings.datumdef")
        except ImportError:
            return None
        if not all(hasattr(handle_event, n) for n in _RUNTIME_NAMES):
            return None
        try:
            return cls(handle_event, meta, datumdef, transport, legacy)
        except AttributeError:  # a runtime laid out otherwise: its protobuf entry it is
            return None

    def enable(self, function_id: str) -> bool:
        """After a successful load: route `function_id` here if it qualifies. Anything
        unexpected in the runtime's function record leaves it on the protobuf entry."""
        rt = self._rt
        try:
            fi = rt._functions.get_function(function_id)
            if fi is None or (fi.is_http_func and rt.HttpV2Registry.http_v2_enabled()):
                return False
            if getattr(fi, "settlement_client_arg", None) is not None:
                return False
            if any(getattr(t, "deferred_bindings_enabled", False) for t in fi.input_types.values()):
                return False
        except AttributeError:
            return False
        self._transport.enable_invocations(self._datum_cls, function_id)
        return True

    async def invoke(self, request_id, invocation_id, function_id, inputs, trigger_metadata,
                     trace_parent, trace_state, trace_attributes, retry_count, max_retry_count):
        """`handle_event.invocation_request`, step for step, on Datums."""
        invocation_id_cv.set(invocation_id)
        rt = self._rt
        try:
            fi = rt._functions.get_function(function_id)
            assert fi is not None
            request = _Request(invocation_id, _Trace(trace_parent, trace_state, trace_attributes),
                               _Retry(retry_count, max_retry_count))
            late = self._context_after_bindings
            if not late:
                fi_context = rt.get_context(request, fi.name, fi.directory)
                if self._otel_enabled():
                    rt.configure_opentelemetry(fi_context)
            rt.logger.info("Function name: %s, Function Type: %s", fi.name,
                           ("async" if fi.is_async else "sync"))
            args = {}
            for name, datum in inputs:
                type_info = fi.input_types[name]
                metadata = trigger_metadata if rt.is_trigger_binding(type_info.binding_name) else {}
                binding = self._get_binding(type_info.binding_name, type_info.deferred_bindings_enabled)
                try:
                    args[name] = binding.decode(datum, trigger_metadata=metadata)
                except NotImplementedError:
                    raise TypeError(
                        'unable to decode incoming TypedData: '
                        'unsupported combination of TypedData field %s '
                        'and expected binding type %s' % (repr(datum and datum.type), binding))
            if late:
                fi_context = rt.get_context(request, fi.name, fi.directory)
            fi_context.thread_local_storage.invocation_id = invocation_id
            if fi.requires_context:
                args['context'] = fi_context
            if fi.output_types:
                for name in fi.output_types:
                    args[name] = rt.Out()
            if fi.is_async:
                if late and self._otel_enabled():
                    rt.configure_opentelemetry(fi_context)
                call_result = await rt.execute_async(fi.func, args)
            else:
                call_result = await self._in_thread(
                    rt.get_current_loop(), rt.get_threadpool_executor(), rt.run_sync_func,
                    invocation_id, fi_context, fi.func, args)
            if call_result is not None and not fi.has_return:
                raise RuntimeError(
                    'function %s without a $return binding'
                    'returned a non-None value', repr(fi.name))
            outputs = []
            if fi.output_types:
                for out_name, out_type in fi.output_types.items():
                    val = args[out_name].get()
                    if val is not None:
                        outputs.append((out_name, self._get_datum(out_type.binding_name, val, out_type.pytype)))
            returned = None
            if fi.return_type is not None:
                returned = self._get_datum(fi.return_type.binding_name, call_result, fi.return_type.pytype)
            encoded = self._encoded(request_id, invocation_id, returned, outputs, fi.return_type is not None)
            sys.stdout.flush()
        except Exception as ex:
            encoded = protos.StreamingMessage(
                request_id=request_id,
                invocation_response=protos.InvocationResponse(
                    invocation_id=invocation_id,
                    result=protos.StatusResult(
                        status=protos.StatusResult.Failure,
                        exception=rt.serialize_exception(ex, protos)))).SerializeToString()
        self._send_bytes(encoded)

    def _in_thread(self, loop, executor, func, *args) -> asyncio.Future:
        """`loop.run_in_executor(executor, func, *args)`, as the runtime calls it: the same
        `submit` to the runtime's pool, with the outcome handed back to the loop by one
        callback instead of asyncio's chain of two futures (a sync invocation costs the
        worker 11-18 % less, loadtest/results/2026-12-05-sync-handoff.md)."""
        future = loop.create_future()
        working = self._working

        def done(work):  # in the pool's thread
            try:
                loop.call_soon_threadsafe(_settle, future, work, working)
            except RuntimeError:  # the loop has closed: nobody waits for the answer
                pass

        work = executor.submit(func, *args)
        working.add(work)
        work.add_done_callback(done)
        return future

    def cancel_queued(self) -> None:
        """The stream has ended: sync invocations still waiting for a pool thread are
        dropped, as asyncio's teardown drops `run_in_executor` work that has not started
        (what runs goes on to its end)."""
        for work in list(self._working):
            work.cancel()

    def _otel_enabled(self) -> bool:
        otel = self._rt.otel_manager
        return otel.get_azure_monitor_available() or otel.get_otel_libs_available()

    def _encoded(self, request_id, invocation_id, returned, outputs, has_return):
        """Encoded in Rust (a native Frame, which the transport sends without copying it);
        what it leaves to the runtime (cookies, unusual values, a missing return Datum) goes
        through the runtime's `datum_as_proto` (bytes), which also raises what the protobuf
        entry would raise."""
        if returned is not None or not has_return:
            try:
                return self._encode(request_id, invocation_id, returned, outputs)
            except NotImplementedError:
                pass
        as_proto = self._datum_as_proto
        return protos.StreamingMessage(
            request_id=request_id,
            invocation_response=protos.InvocationResponse(
                invocation_id=invocation_id,
                return_value=as_proto(returned, protos) if has_return else None,
                result=protos.StatusResult(status=protos.StatusResult.Success),
                output_data=[protos.ParameterBinding(name=n, data=as_proto(d, protos))
                             for n, d in outputs])).SerializeToString()


def _settle(future: asyncio.Future, work, working: set) -> None:
    working.discard(work)
    if future.cancelled():
        return
    if work.cancelled():
        future.cancel()
    elif (error := work.exception()) is not None:
        future.set_exception(error)
    else:
        future.set_result(work.result())


def start(loop: asyncio.AbstractEventLoop, coro, tasks: set) -> None:
    """Runs `coro` at once up to its first suspension (an async hello never suspends, so
    its answer joins this batch's sends); keeps a reference while it is pending."""
    task = asyncio.Task(coro, loop=loop, eager_start=True)
    if not task.done():
        tasks.add(task)
        task.add_done_callback(tasks.discard)
