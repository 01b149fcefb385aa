"""Sluice's own added latency at low load (issue 7, goal 4): the p50 of one request at a time
through Sluice (HTTP front end, gRPC hop, worker transport) minus the p50 of the same
invocation made in-process on the platform runtime by a Python script.

    python3.13 loadtest/overhead.py [--sluice target/release/sluice] [-n 3000] [--app DIR]

It starts `sluice serve loadtest/apps/hello_async_sync` (or --app, e.g.
loadtest/apps/hello_runtime_1_3 for the worker's Datum fast path) with one worker, times sequential
keep-alive GETs (pre-built request bytes, raw socket, so the client adds little), then runs
the in-process half *inside the worker's own environment* (paths read from the running
worker) with uvloop, as the worker does: worker_init → functions_metadata → invocations
built like Sluice builds them. Prints both p50s, the difference and the in-process p50 with
the protobuf parse/serialise a worker pays per message. Environment passes through (e.g.
SLUICE_WORKER_TRANSPORT=grpcio); OVERHEAD_CPUS=0 runs Sluice and its worker under
`taskset -c 0` (no cross-CPU wake-ups).
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = os.path.join(HERE, "apps", "hello_async_sync")
PORT = 18271


def percentile(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def through_sluice(function, n, warmup):
    request = (f"GET /api/{function} HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\n"
               "User-Agent: overhead\r\nAccept: */*\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", PORT))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    samples = []
    for i in range(warmup + n):
        start = time.perf_counter_ns()
        sock.sendall(request)
        data = b""
        while not data.endswith(b"Hello, world!"):
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed by sluice")
            data += chunk
        if i >= warmup:
            samples.append(time.perf_counter_ns() - start)
    sock.close()
    return samples


# Runs in the worker's environment (its site-packages and worker dir on sys.path).
IN_PROCESS = r'''
import asyncio, json, os, sys, time, uuid
from sluice_worker.protos import protos
from sluice_worker.dispatcher import _Request
import azure_functions_runtime as rt

function, n, warmup, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
props = {"protos": protos, "host": "127.0.0.1"}

async def main():
    app = os.getcwd()
    init = protos.StreamingMessage(worker_init_request=protos.WorkerInitRequest(
        function_app_directory=app, worker_directory=app))
    await rt.worker_init_request(_Request("worker_init_request", init, props))
    rt.start_threadpool_executor()
    meta = await rt.functions_metadata_request(_Request("functions_metadata_request",
        protos.StreamingMessage(functions_metadata_request=protos.FunctionsMetadataRequest(
            function_app_directory=app)), props))
    ids = {m.name: m.function_id for m in meta.function_metadata_results}
    headers = {"host": f"127.0.0.1:{port}", "user-agent": "overhead", "accept": "*/*"}

    def message():
        return protos.StreamingMessage(invocation_request=protos.InvocationRequest(
            invocation_id=str(uuid.uuid4()), function_id=ids[function],
            input_data=[protos.ParameterBinding(name="req", data=protos.TypedData(
                http=protos.RpcHttp(method="GET", url=f"http://127.0.0.1:{port}/api/{function}",
                                    headers=headers)))]))

    bare, wire = [], []
    for i in range(warmup + n):
        msg = message()
        start = time.perf_counter_ns()
        response = await rt.invocation_request(_Request("invocation_request", msg, props))
        took = time.perf_counter_ns() - start
        assert response.result.status == protos.StatusResult.Success, response
        encoded = msg.SerializeToString()
        start = time.perf_counter_ns()
        parsed = protos.StreamingMessage.FromString(encoded)
        response = await rt.invocation_request(_Request("invocation_request", parsed, props))
        protos.StreamingMessage(invocation_response=response).SerializeToString()
        with_wire = time.perf_counter_ns() - start
        if i >= warmup:
            bare.append(took)
            wire.append(with_wire)
    print(json.dumps({"bare": bare, "wire": wire}))

import uvloop
uvloop.run(main())
'''


def cpu_seconds(pid):
    """User + system CPU of one process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pid(sluice_pid):
    children = subprocess.run(["pgrep", "-P", str(sluice_pid)], capture_output=True, text=True)
    return int(children.stdout.split()[0])


def worker_paths(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        script = next(a for a in f.read().split(b"\0") if a.endswith(b"worker.py"))
    return env[b"SLUICE_WORKER_SITE"].decode(), os.path.dirname(script.decode())


def in_process(app, function, n, warmup, site, worker_dir):
    # The app's own packages first, as the worker puts them (a pinned runtime lives there).
    app_site = os.path.join(app, ".python_packages", "lib", "site-packages")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([app_site, site, worker_dir]),
               FUNCTIONS_APPLICATION_DIRECTORY=app)
    out = subprocess.run([sys.executable, "-c", IN_PROCESS, function, str(n), str(warmup), str(PORT)],
                         cwd=app, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"in-process run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sluice", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "sluice"))
    p.add_argument("-n", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--function", default="async_hello")
    p.add_argument("--app", default=APP)
    args = p.parse_args()
    app = os.path.abspath(args.app)

    log = open(os.path.join(HERE, ".logs", "overhead-sluice.log"), "w") if os.path.isdir(
        os.path.join(HERE, ".logs")) else subprocess.DEVNULL
    pin = ["taskset", "-c", os.environ["OVERHEAD_CPUS"]] if os.environ.get("OVERHEAD_CPUS") else []
    sluice = subprocess.Popen(pin + [args.sluice, "serve", app, "--port", str(PORT),
                               "--admin-port", str(PORT + 1), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120  # the first start may build the worker environment
        while True:
            try:
                through_sluice(args.function, 1, 0)
                break
            except OSError:
                if time.monotonic() > deadline or sluice.poll() is not None:
                    raise RuntimeError("sluice did not become ready")
                time.sleep(0.1)
        worker = worker_pid(sluice.pid)
        site, worker_dir = worker_paths(worker)
        through_sluice(args.function, args.warmup, 0)
        before = cpu_seconds(sluice.pid), cpu_seconds(worker)
        via = through_sluice(args.function, args.n, 0)
        after = cpu_seconds(sluice.pid), cpu_seconds(worker)
    finally:
        sluice.terminate()
        sluice.wait(timeout=30)
    local = in_process(app, args.function, args.n, args.warmup, site, worker_dir)

    def us(ns):
        return ns / 1000

    p50_via, p50_bare, p50_wire = (statistics.median(s) for s in (via, local["bare"], local["wire"]))
    print(f"app {os.path.basename(app)}, function {args.function}, n={args.n} sequential, transport="
          f"{os.environ.get('SLUICE_WORKER_TRANSPORT') or 'default'}")
    print(f"through sluice      p50 {us(p50_via):8.1f} us   p99 {us(percentile(via, 0.99)):8.1f} us")
    print(f"in-process runtime  p50 {us(p50_bare):8.1f} us   p99 {us(percentile(local['bare'], 0.99)):8.1f} us")
    print(f"  + parse/serialise p50 {us(p50_wire):8.1f} us")
    print(f"sluice added p50    {us(p50_via - p50_bare):8.1f} us  (goal: <= 100 us)")
    print(f"CPU per request     sluice {(after[0] - before[0]) / args.n * 1e6:6.1f} us, "
          f"worker {(after[1] - before[1]) / args.n * 1e6:6.1f} us (clock-tick resolution)")


if __name__ == "__main__":
    main()
