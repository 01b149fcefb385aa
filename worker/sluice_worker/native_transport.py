"""The EventStream client in Rust (the `_native` extension built from native/), driven on
the worker's event loop: the extension owns the HTTP/2 connection's socket but never a
thread, so a request costs the worker no cross-thread wake-up. The loop watches the socket
and calls `pump()`, which reads, writes and decodes whatever is ready; outbound messages
are coalesced and handed over once per loop iteration, then pumped out at once.

Messages cross as encoded bytes and are parsed and built here with the same protobuf
classes the runtime uses, except invocations of the functions `enable_invocations` names:
those arrive decoded (see fastpath.py).
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
        self._conn = None
        self._loop = None
        self._loop_thread = None
        self._pending = []
        self._pump = None

    encode_invocation_response = staticmethod(_native.encode_invocation_response)

    def enable_invocations(self, datum_cls, function_id: str) -> None:
        self._conn.enable_invocations(datum_cls, function_id)

    def disable_invocations(self) -> None:
        self._conn.disable_invocations()

    def send(self, message) -> None:
        """Queue one StreamingMessage. Safe from any thread, never blocks."""
        self.send_bytes(message.SerializeToString())

    def send_bytes(self, data: bytes) -> None:
        """Queue one encoded StreamingMessage; it goes out with the others queued in this
        loop iteration. Other threads (sync functions' logs) hand it to the loop."""
        if threading.get_ident() != self._loop_thread:
            try:
                self._loop.call_soon_threadsafe(self.send_bytes, data)
            except RuntimeError:  # the loop has closed: the stream is gone
                pass
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            blocked = self._conn.send_many(pending)
        except ConnectionError:  # the stream has ended: run() is returning
            return
        if blocked:  # the rest goes out as the socket takes it
            self._pump()

    async def run(self, worker_id: str, connect_timeout: float, on_message, on_invocation=None):
        """Connects, then calls `on_message(msg)` on the loop for every inbound message,
        `on_invocation(*fields)` for a decoded one, until the stream ends. Returns the
        error that ended it, or None."""
        self._loop = loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        first = protos.StreamingMessage(start_stream=protos.StartStream(worker_id=worker_id))
        # Blocks the loop for the TCP connect only: nothing else can run before the host speaks.
        self._conn = conn = _native.Connection(
            self._host, self._port, first.SerializeToString(), self._max, connect_timeout)
        parse = protos.StreamingMessage.FromString
        ended = loop.create_future()
        fd = conn.fileno()
        watching_write = False

        def pump():
            nonlocal watching_write
            try:
                messages, end, want_write = conn.pump()
                for item in messages:
                    if type(item) is bytes:
                        on_message(parse(item))
                    else:
                        on_invocation(*item)
            except BaseException as exc:  # as the grpcio transport: an error ends the stream
                end, want_write = exc, False
            if want_write != watching_write:
                watching_write = want_write
                if want_write:
                    loop.add_writer(fd, pump)
                else:
                    loop.remove_writer(fd)
            if end is not None and not ended.done():
                loop.remove_reader(fd)
                loop.remove_writer(fd)
                ended.set_result(end)

        self._pump = pump
        loop.add_reader(fd, pump)
        pump()  # writes the preface and StartStream
        end = await ended
        if isinstance(end, BaseException):
            raise end
        return ConnectionError(end) if end else None
