"""Worker start-up: arguments (both the classic and the `--functions-*` forms, as the
platform passes them), uvloop, logging, connect, then serve until the stream ends.

Start-up time matters (it is the cold start): the module imports only what the first
message needs, and parses its few flags by hand rather than importing argparse."""
import asyncio
import logging
import sys

from . import logs
from .dispatcher import Dispatcher

# Imported here, before worker.py puts the app's packages first: the transport must run
# on the worker's own grpcio even when the app ships another one.
from .transport import Transport

CONNECT_TIMEOUT_S = 5.0

# Flag (either form) → attribute.
_FLAGS = {
    "--host": "host",
    "--port": "port",
    "--workerId": "worker_id",
    "--functions-worker-id": "worker_id",
    "--requestId": "request_id",
    "--functions-request-id": "request_id",
    "--grpcMaxMessageLength": "max_message_length",
    "--functions-grpc-max-message-length": "max_message_length",
    "--functions-uri": "uri",
}


class Args:
    host = None
    port = None
    worker_id = None
    request_id = None
    max_message_length = 2147483647
    uri = None


def parse_args(argv) -> Args:
    """`--flag value` and `--flag=value`; unknown flags are ignored (as the platform's
    worker does), a missing value or a bad number is an error."""
    args = Args()
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        name = _FLAGS.get(flag)
        if name is not None and not eq:
            if i + 1 >= len(argv):
                _usage(f"{flag} needs a value")
            value = argv[i + 1]
            i += 1
        if name in ("port", "max_message_length"):
            try:
                value = int(value)
            except ValueError:
                _usage(f"{flag}: not a number: {value!r}")
        if name is not None:
            setattr(args, name, value)
        i += 1
    if args.uri and not (args.host and args.port):
        from urllib.parse import urlparse  # only for the URI-only form
        parsed = urlparse(args.uri)
        args.host, args.port = parsed.hostname, parsed.port
    if not (args.host and args.port and args.worker_id):
        _usage("--host/--port (or --functions-uri) and --workerId are required")
    return args


def _usage(message: str):
    print(f"sluice-worker: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


async def serve(args) -> int:
    loop = asyncio.get_running_loop()
    transport = Transport(args.host, args.port, args.max_message_length)
    handler = logs.RpcLogHandler(transport.send)
    dispatcher = Dispatcher(loop, transport, args.host, handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logs.quiet_system_loggers()
    error = await transport.run(args.worker_id, CONNECT_TIMEOUT_S, dispatcher.on_message,
                                dispatcher.on_invocation)
    dispatcher.stop()
    if error is not None:
        print(f"sluice worker: stream closed: {error}", file=sys.stderr, flush=True)
    return 0


def main(argv) -> int:
    args = parse_args(argv)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(serve(args))
