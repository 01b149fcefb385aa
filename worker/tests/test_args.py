"""The worker's command line: both flag sets the platform passes, `--flag=value`, unknown
flags ignored, and a clear exit for what cannot be used."""
import pytest

from sluice_worker.main import parse_args

PLATFORM = ["--host", "127.0.0.1", "--port", "50051", "--workerId", "w1", "--requestId", "r1",
            "--grpcMaxMessageLength", "2147483647", "--functions-uri", "http://127.0.0.1:50051/",
            "--functions-worker-id", "w1", "--functions-request-id", "r1",
            "--functions-grpc-max-message-length", "2147483647"]


def test_the_platform_command_line():
    args = parse_args(PLATFORM)
    assert (args.host, args.port, args.worker_id, args.request_id) == ("127.0.0.1", 50051, "w1", "r1")
    assert args.max_message_length == 2147483647


def test_equals_form_and_unknown_flags():
    args = parse_args(["--host=127.0.0.1", "--port=7", "--workerId=w", "--newer-flag", "x"])
    assert (args.host, args.port, args.worker_id) == ("127.0.0.1", 7, "w")


def test_the_uri_alone_gives_host_and_port():
    args = parse_args(["--functions-uri", "http://127.0.0.1:6000/", "--functions-worker-id", "w"])
    assert (args.host, args.port) == ("127.0.0.1", 6000)


@pytest.mark.parametrize("argv, says", [
    (["--host", "127.0.0.1", "--port", "x", "--workerId", "w"], "not a number"),
    (["--host", "127.0.0.1", "--port", "1", "--workerId"], "needs a value"),
    (["--host", "127.0.0.1", "--port", "1"], "are required"),
])
def test_unusable_arguments_exit_2_with_the_reason(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err
