"""The FunctionRpc message classes built from Sluice's descriptor set: a private pool, and
the wire format the host reads."""
from google.protobuf import descriptor_pool

from sluice_worker.protos import protos


def test_messages_live_in_a_private_pool():
    pool = protos.StreamingMessage.DESCRIPTOR.file.pool
    assert pool is not descriptor_pool.Default()


def test_a_start_stream_round_trips():
    wire = protos.StreamingMessage(start_stream=protos.StartStream(worker_id="w1")).SerializeToString()
    # StreamingMessage.start_stream is field 20, StartStream.worker_id field 2 (the contract's).
    assert wire == b"\xa2\x01\x04\x12\x02w1"
    back = protos.StreamingMessage.FromString(wire)
    assert back.WhichOneof("content") == "start_stream" and back.start_stream.worker_id == "w1"


def test_nullable_timestamp_takes_the_runtime_timestamp():
    from google.protobuf import timestamp_pb2
    stamp = timestamp_pb2.Timestamp(seconds=5)
    nullable = protos.NullableTimestamp(value=stamp)
    assert nullable.value.seconds == 5
