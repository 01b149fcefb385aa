"""The EventStream client in Rust (the `_native` extension built from native/): a tokio
thread owns the HTTP/2 connection, so the worker's thread spends no time in gRPC code.
Inbound messages are announced on a descriptor the event loop watches; each wake-up
drains every queued message (a batch under load). Messages cross as encoded bytes and are
parsed and built here with the same protobuf classes the runtime uses, except invocations
of the functions `enable_invocations` names: those arrive decoded (see fastpath.py).
"""
import asyncio
import threading

from . import _native
from .protos import protos


class NativeTransport:
    name = "native"

    def __init__(self, host: str, port: int, max_message_length: int):
        self._host = host
        self._port = port
        self._max = max_message_length
        self._stream = None
        self._loop = None
        self._loop_thread = None
        self._pending = []

    encode_invocation_response = staticmethod(_native.encode_invocation_response)

    def enable_invocations(self, datum_cls, function_id: str) -> None:
        self._stream.enable_invocations(datum_cls, function_id)

    def disable_invocations(self) -> None:
        self._stream.disable_invocations()

    def send(self, message) -> None:
        """Queue one StreamingMessage. Safe from any thread, never blocks."""
        self.send_bytes(message.SerializeToString())

    def send_bytes(self, data: bytes) -> None:
        """Queue one encoded StreamingMessage. On the loop, messages are coalesced and
        handed over once per loop iteration: each hand-over wakes the Rust thread (a
        syscall; per message it was ~12 % of the worker's py-spy samples under load).
        Other threads (sync functions' logs) hand over at once."""
        if threading.get_ident() != self._loop_thread:
            try:
                self._stream.send(data)
            except ConnectionError:  # the stream ended: run() is returning, nothing to send to
                pass
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            self._stream.send_many(pending)
        except ConnectionError:  # as in send(): the stream has ended
            pass

    async def run(self, worker_id: str, connect_timeout: float, on_message, on_invocation=None):
        """Connects, then calls `on_message(msg)` on the loop for every inbound message,
        `on_invocation(*fields)` for a decoded one, until the stream ends. Returns the
        error that ended it, or None."""
        self._loop = loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        first = protos.StreamingMessage(start_stream=protos.StartStream(worker_id=worker_id))
        # Blocks the loop for the connect only: nothing else can run before the host speaks.
        self._stream = stream = _native.connect(
            self._host, self._port, first.SerializeToString(), self._max, connect_timeout)
        parse = protos.StreamingMessage.FromString
        ended = loop.create_future()
        fd = stream.fileno()

        def readable():
            try:
                messages, end = stream.drain()
                for item in messages:
                    if type(item) is bytes:
                        on_message(parse(item))
                    else:
                        on_invocation(*item)
            except BaseException as exc:  # as the grpcio transport: an error ends the stream
                end = exc
            if end is not None:
                loop.remove_reader(fd)
                if not ended.done():
                    ended.set_result(end)

        loop.add_reader(fd, readable)
        end = await ended
        if isinstance(end, BaseException):
            raise end
        return ConnectionError(end) if end else None
