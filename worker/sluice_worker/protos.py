"""Message classes for the FunctionRpc contract, built at start-up from the descriptor
set Sluice compiled from proto/FunctionRpc.proto (written next to this package as
FunctionRpc.desc). No generated code is shipped, so host and worker can never drift.

The classes live in a private descriptor pool: an app that ships its own copy of the
Functions protos (or any file named FunctionRpc.proto) cannot collide with them.
"""
import os
import types

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf import duration_pb2, timestamp_pb2

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
    ns["Timestamp"] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("google.protobuf.Timestamp"))
    return types.SimpleNamespace(**ns)


protos = _load()
