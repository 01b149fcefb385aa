"""Message classes for the FunctionRpc contract, built at start-up from the descriptor
set Sluice compiled from proto/FunctionRpc.proto (written next to this package as
FunctionRpc.desc). No generated code is shipped, so host and worker can never drift.

The classes live in a private descriptor pool: an app that ships its own copy of the
Functions protos (or any file named FunctionRpc.proto) cannot collide with them.
"""
import os
import types

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory, timestamp_pb2

_DESC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "FunctionRpc.desc")
_FILE = "FunctionRpc.proto"


def _load() -> types.SimpleNamespace:
    with open(_DESC, "rb") as f:
        fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    names = {fd.name for fd in fds.file}
    for wkt in (duration_pb2, timestamp_pb2):
        if wkt.DESCRIPTOR.name not in names:
            pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wkt.DESCRIPTOR.serialized_pb))
    for fd in fds.file:
        pool.Add(fd)
    classes = message_factory.GetMessageClassesForFiles([_FILE], pool)
    ns = {}
    for full_name, cls in classes.items():
        if full_name.startswith("AzureFunctionsRpcMessages.") and full_name.count(".") == 1:
            ns[full_name.rsplit(".", 1)[1]] = cls
    ns["Timestamp"] = timestamp = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("google.protobuf.Timestamp"))
    ns["NullableTimestamp"] = _adopting_timestamps(ns["NullableTimestamp"], timestamp)
    return types.SimpleNamespace(**ns)


def _adopting_timestamps(nullable, timestamp):
    """NullableTimestamp's constructor, taking the runtime's Timestamp too.

    The runtime builds a cookie's `expires` from google.protobuf.timestamp_pb2.Timestamp,
    a class of the default pool; a message field of this private pool only accepts the
    pool's own Timestamp (protobuf then tries the value as a datetime and fails), so the
    value is copied into one.
    """
    def make(value=None, **fields):
        if value is not None and not isinstance(value, timestamp):
            value = timestamp(seconds=value.seconds, nanos=value.nanos)
        return nullable(value=value, **fields) if value is not None else nullable(**fields)
    return make


protos = _load()
