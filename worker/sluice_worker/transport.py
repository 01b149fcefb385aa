"""The gRPC EventStream client.

grpcio's synchronous bidirectional stream runs on one dedicated thread: inbound
messages are handed to the asyncio loop with call_soon_threadsafe, outbound messages
go through a thread-safe queue that feeds the request iterator. The first outbound
message is StartStream{worker_id}, as the contract requires.
"""
import queue
import threading

import grpc

from .protos import protos

_METHOD = "/AzureFunctionsRpcMessages.FunctionRpc/EventStream"
_CLOSE = object()


class Transport:
    def __init__(self, host: str, port: int, max_message_length: int):
        options = [
            ("grpc.max_receive_message_length", max_message_length),
            ("grpc.max_send_message_length", max_message_length),
            ("grpc.enable_http_proxy", 0),
        ]
        self._channel = grpc.insecure_channel(f"{host}:{port}", options=options)
        self._call = self._channel.stream_stream(
            _METHOD,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=protos.StreamingMessage.FromString,
        )
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()

    def send(self, message) -> None:
        """Queue one StreamingMessage; safe from any thread."""
        self._outbox.put(message)

    def close(self) -> None:
        self._outbox.put(_CLOSE)

    def _outgoing(self, worker_id: str):
        yield protos.StreamingMessage(start_stream=protos.StartStream(worker_id=worker_id))
        while True:
            item = self._outbox.get()
            if item is _CLOSE:
                return
            yield item

    def start(self, worker_id: str, connect_timeout: float, on_message, on_closed) -> None:
        """Connects, then reads the stream on a daemon thread. `on_message(msg)` and
        `on_closed(error)` are called on that thread; callers marshal to their loop."""
        grpc.channel_ready_future(self._channel).result(timeout=connect_timeout)

        def pump():
            error = None
            try:
                for message in self._call(self._outgoing(worker_id)):
                    on_message(message)
            except grpc.RpcError as exc:  # the host went away or reset the stream
                error = exc
            finally:
                on_closed(error)

        threading.Thread(target=pump, name="sluice-grpc", daemon=True).start()
