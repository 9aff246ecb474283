"""Bad input never crashes or blocks the daemon, and every refusal is typed and clear."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from eventbus.wire import decode
from tests.e2e.conftest import Bus, command

pytestmark = pytest.mark.e2e


@pytest.fixture
def raw(bus: Bus) -> Iterator[zmq.Socket[bytes]]:
    """A bare DEALER on the daemon's socket, for sending what no client would."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(f"ipc://{bus.socket}")
    try:
        yield sock
    finally:
        sock.close(linger=0)
        ctx.term()


def envelope(**fields: object) -> bytes:
    base: dict[str, object] = {"v": 1, "kind": "request", "id": "x1", "topic": "control.admin.status", "body": {}}
    base.update(fields)
    return msgpack.packb(base)  # type: ignore[no-any-return]


def error_of(sock: zmq.Socket[bytes]) -> tuple[str, str]:
    env = decode(sock.recv())
    assert env.kind.value == "error", env
    return env.id, str(env.body["code"])


def still_serves(bus: Bus) -> int:
    with bus.client() as c:
        return int(c.stats()["bad_frames"])


def test_garbage_bytes_get_a_bad_frame_error_and_the_daemon_keeps_serving(bus: Bus, raw: zmq.Socket[bytes]) -> None:
    raw.send(b"\xc1\xff garbage")
    assert error_of(raw) == ("", "bad_frame")
    assert still_serves(bus) == 1


def test_a_wrong_version_gets_bad_version_with_the_correlation_id(bus: Bus, raw: zmq.Socket[bytes]) -> None:
    raw.send(envelope(v=99))
    assert error_of(raw) == ("x1", "bad_version")
    assert still_serves(bus) == 1


def test_an_unknown_message_type_gets_unknown_type(bus: Bus, raw: zmq.Socket[bytes]) -> None:
    raw.send(envelope(kind="yell"))
    assert error_of(raw) == ("x1", "unknown_type")


def test_an_unknown_topic_gets_unknown_topic(bus: Bus, raw: zmq.Socket[bytes]) -> None:
    raw.send(envelope(topic="control.nothing.here"))
    assert error_of(raw) == ("x1", "unknown_topic")


def test_a_frame_over_the_limit_gets_too_large_with_the_correlation_id(bus: Bus, raw: zmq.Socket[bytes]) -> None:
    raw.send(envelope(body={"blob": b"x" * (1 << 20)}))
    assert error_of(raw) == ("x1", "too_large")
    assert still_serves(bus) == 1


def test_a_frame_nested_past_64_levels_gets_too_deep_with_the_correlation_id(bus: Bus, raw: zmq.Socket[bytes]) -> None:
    nested: object = 0
    for _ in range(300):
        nested = [nested]
    raw.send(envelope(topic="control.task.submit", body={"operation": "echo", "payload": nested}))
    env = decode(raw.recv())
    assert (env.id, env.body["code"]) == ("x1", "too_deep") and "64" in str(env.body["message"])
    assert still_serves(bus) == 1


def test_a_map_key_that_is_not_a_string_gets_bad_frame_with_the_correlation_id(
    bus: Bus, raw: zmq.Socket[bytes]
) -> None:
    raw.send(envelope(topic="control.task.submit", body={"operation": "echo", "payload": {1: "x"}}))
    assert error_of(raw) == ("x1", "bad_frame")


def test_a_frame_far_over_the_limit_is_cut_by_the_transport_and_others_are_served(
    bus: Bus, raw: zmq.Socket[bytes]
) -> None:
    raw.send(b"x" * (3 << 20))  # past MAXMSGSIZE: libzmq drops this connection
    assert still_serves(bus) == 0


def test_multipart_messages_get_bad_frame_with_the_correlation_id(bus: Bus, raw: zmq.Socket[bytes]) -> None:
    raw.send_multipart([envelope(), b"extra"])
    assert error_of(raw) == ("x1", "bad_frame")


def test_an_invalid_submission_is_refused_with_the_field_named(bus: Bus, raw: zmq.Socket[bytes]) -> None:
    raw.send(envelope(topic="control.task.submit", body={"operation": "echo", "priority": 42}))
    env = decode(raw.recv())
    assert env.body["code"] == "invalid"
    assert "priority" in str(env.body["message"])


def test_results_for_another_collector_are_forbidden(bus: Bus, raw: zmq.Socket[bytes]) -> None:
    bus.start_collector("owner")
    body = {"event": "accepted", "task_id": "t1", "attempt": 1}
    raw.send(envelope(topic="control.collector.result.owner", body=body))
    assert error_of(raw) == ("x1", "forbidden")


def test_cli_exits_3_naming_the_socket_when_no_daemon_runs(bare_bus: Bus) -> None:
    out = bare_bus.ctl("status")
    assert out.returncode == 3
    assert str(bare_bus.socket) in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_cli_with_json_prints_the_error_object_too(bare_bus: Bus) -> None:
    out = bare_bus.ctl("--json", "status")
    assert out.returncode == 3
    assert json.loads(out.stdout)["error"]["code"] == "unreachable"


def test_invalid_payload_json_exits_2_with_the_parse_error(bare_bus: Bus) -> None:
    out = bare_bus.ctl("submit", "echo", "--payload", "{nope")
    assert out.returncode == 2
    assert "invalid JSON" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_usage_errors_exit_2_with_a_json_error_under_json(bare_bus: Bus) -> None:
    out = bare_bus.ctl("--json", "submit", "echo", "--priority", "11")
    assert out.returncode == 2
    assert json.loads(out.stdout)["error"]["code"] == "usage"
    assert "--priority" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_unknown_task_id_exits_4(bus: Bus) -> None:
    out = bus.ctl("task", "no-such-task")
    assert out.returncode == 4
    assert "no-such-task" in out.stderr


def test_a_socket_path_too_long_is_a_clear_startup_error(bare_bus: Bus) -> None:
    path = bare_bus.root / ("x" * 120) / "eb.sock"
    proc = bare_bus.spawn([command("eventbusd"), "--socket", str(path)], "long")
    assert proc.wait(10) == 2
    assert "longer than the 107" in proc.output()
    assert "Traceback" not in proc.output()


def test_an_unusable_socket_directory_is_a_clear_startup_error(bare_bus: Bus) -> None:
    blocker = bare_bus.root / "file"
    blocker.write_text("not a directory")
    proc = bare_bus.spawn([command("eventbusd"), "--socket", str(blocker / "eb.sock")], "baddir")
    assert proc.wait(10) == 2
    assert f"socket directory {blocker} is not a directory" in proc.output()


def test_a_second_daemon_on_the_same_socket_fails_and_the_first_keeps_serving(bus: Bus) -> None:
    second = bus.spawn([command("eventbusd"), "--socket", str(bus.socket)], "second")
    assert second.wait(10) == 2
    assert "another eventbusd is serving" in second.output()
    with bus.client() as c:
        assert c.status()["collectors"] == 0


def test_the_socket_is_0660_in_a_0750_directory(bare_bus: Bus) -> None:
    bare_bus.socket = bare_bus.root / "sub" / "eb.sock"
    bare_bus.env["EVENTBUS_SOCKET"] = str(bare_bus.socket)
    bare_bus.start_daemon()
    assert os.stat(bare_bus.socket).st_mode & 0o777 == 0o660
    assert os.stat(bare_bus.socket.parent).st_mode & 0o777 == 0o750


def test_a_stale_socket_of_a_dead_daemon_is_replaced(bare_bus: Bus) -> None:
    first = bare_bus.start_daemon()
    first.popen.kill()
    first.wait(5)
    assert Path(bare_bus.socket).exists()
    bare_bus.start_daemon()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to drop to nobody"
)
def test_a_socket_directory_the_daemon_cannot_write_is_a_clear_startup_error(bare_bus: Bus) -> None:
    locked = bare_bus.root / "locked"
    locked.mkdir(mode=0o755)
    bare_bus.root.chmod(0o755)
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", command("eventbusd")]
    proc = bare_bus.spawn([*argv, "--socket", str(locked / "eb.sock")], "nobody")
    assert proc.wait(10) == 2
    assert f"socket directory {locked} is not writable" in proc.output()


@pytest.mark.parametrize("value", [msgpack.ExtType(5, b"x"), {"at": msgpack.Timestamp(1, 5)}])
def test_a_msgpack_ext_type_in_a_payload_gets_bad_frame_with_the_correlation_id(
    bus: Bus, raw: zmq.Socket[bytes], value: object
) -> None:
    raw.send(envelope(topic="control.task.submit", body={"operation": "echo", "payload": value}))
    env = decode(raw.recv())
    assert (env.id, env.body["code"]) == ("x1", "bad_frame") and "ext type" in str(env.body["message"])
    with bus.client() as c:
        assert c.stats()["tasks_submitted"] == 0


def test_nan_is_taken_inside_a_payload_and_refused_in_a_typed_field(bus: Bus, raw: zmq.Socket[bytes]) -> None:
    raw.send(envelope(topic="control.task.submit", body={"operation": "echo", "payload": [float("nan")]}))
    assert decode(raw.recv()).kind.value == "reply"
    raw.send(envelope(topic="control.task.submit", body={"operation": "echo", "deadline": float("nan")}))
    env = decode(raw.recv())
    assert env.body["code"] == "invalid" and "deadline" in str(env.body["message"])


def test_watching_a_pattern_that_never_delivers_exits_4_with_one_line(bus: Bus) -> None:
    out = bus.ctl("watch", "control.collector.task.#")
    assert out.returncode == 4
    assert "only events.* topics are published" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
