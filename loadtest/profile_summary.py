"""Summarises a py-spy `raw` (collapsed stacks) profile: the share of samples whose stack
passes through each of a few buckets (first match, leaf-most frame wins), then the hottest
leaf frames. Usage: profile_summary.py FILE.raw"""
import collections
import sys

# Leaf-most frame matching decides the bucket; order = priority from the leaf upwards.
BUCKETS = (
    ("grpcio (cygrpc / grpc core)", ("cygrpc", "grpc_", "grpc/_", "grpc::")),
    ("native transport (Rust)", ("sluice_native", "tokio", "tonic", "h2::", "hyper")),
    ("protobuf (upb parse/serialise)", ("_upb", "upb_", "protobuf")),
    ("runtime (azure_functions_runtime)", ("azure_functions_runtime", "azure/functions")),
    ("sluice_worker (dispatch, transport glue)", ("sluice_worker",)),
    ("asyncio / uvloop", ("asyncio", "uvloop", "loop.pyx")),
    ("idle (epoll/futex wait)", ("epoll", "futex", "__poll", "select")),
)


def bucket(frames):
    for frame in reversed(frames):
        for name, needles in BUCKETS:
            if any(n in frame for n in needles):
                return name
    return "other"


def main(path):
    buckets = collections.Counter()
    leaves = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = stack.split(";")
            total += n
            buckets[bucket(frames)] += n
            leaves[frames[-1]] += n
    print(f"samples: {total}")
    for name, n in buckets.most_common():
        print(f"  {100 * n / total:5.1f} %  {name}")
    print("hottest leaf frames:")
    for name, n in leaves.most_common(12):
        print(f"  {100 * n / total:5.1f} %  {name[:110]}")


if __name__ == "__main__":
    main(sys.argv[1])
