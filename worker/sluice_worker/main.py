"""Worker start-up: arguments (both the classic and the `--functions-*` forms, as the
platform passes them), uvloop, logging, connect, then serve until the stream ends."""
import argparse
import asyncio
import logging
import sys
from urllib.parse import urlparse

from . import logs
from .dispatcher import Dispatcher
from .transport import Transport

CONNECT_TIMEOUT_S = 5.0


def parse_args(argv):
    p = argparse.ArgumentParser(prog="sluice-worker")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workerId", "--functions-worker-id", dest="worker_id")
    p.add_argument("--requestId", "--functions-request-id", dest="request_id")
    p.add_argument("--grpcMaxMessageLength", "--functions-grpc-max-message-length",
                   dest="max_message_length", type=int, default=2147483647)
    p.add_argument("--functions-uri", dest="uri")
    args, _unknown = p.parse_known_args(argv)
    if args.uri and not (args.host and args.port):
        parsed = urlparse(args.uri)
        args.host, args.port = parsed.hostname, parsed.port
    if not (args.host and args.port and args.worker_id):
        p.error("--host/--port (or --functions-uri) and --workerId are required")
    return args


async def serve(args) -> int:
    loop = asyncio.get_running_loop()
    transport = Transport(args.host, args.port, args.max_message_length)
    handler = logs.RpcLogHandler(transport.send)
    dispatcher = Dispatcher(loop, transport.send, args.host, handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logs.quiet_system_loggers()
    error = await transport.run(args.worker_id, CONNECT_TIMEOUT_S, dispatcher.on_message)
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
