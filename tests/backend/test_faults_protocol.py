"""Issue 6, the protocol: whatever a client sends, the server answers with events and never fails.
(test_server.py drives a real `serve` process: malformed lines, busy, stdin EOF, shutdown.)"""

import dataclasses
import io
import json
import os
import threading

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from backend import protocol
from backend.config import ConfigError, GenerationConfig
from backend.protocol import ProtocolError
from backend.serve.lines import parse_request
from backend.serve.server import Server, build_config

from test_trainer import tiny_config

FIELDS = [f.name for f in dataclasses.fields(GenerationConfig)]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module", autouse=True)
def offline():
    """A fuzzed config never reaches for the network (hub model ids)."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


def serve_lines(payload: bytes) -> tuple[int, list[dict], Server]:
    """Run a Server on `payload` as its stdin (then EOF); its exit status and events."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, payload)
    os.close(write_fd)
    out = io.StringIO()
    server = Server(out, "cpu")
    try:
        status = server.serve(read_fd)
    finally:
        for thread in threading.enumerate():  # after a `shutdown` the reader may still be reading to EOF
            if thread.name == "stdin-reader":
                thread.join(10)
        os.close(read_fd)  # only now: a new pipe may reuse the number
    return status, [json.loads(line) for line in out.getvalue().splitlines()], server


def test_a_request_of_another_protocol_version_is_refused():
    assert parse_request(json.dumps({"type": "ping", "version": protocol.PROTOCOL_VERSION}))["type"] == "ping"
    with pytest.raises(ProtocolError, match="protocol version 2; this backend speaks 1"):
        parse_request(json.dumps({"type": "ping", "version": 2}))


def test_bad_lines_each_get_one_error_event_and_the_server_goes_on():
    lines = [b"{not json", b'{"type": "launch"}', b'{"type": "ping", "version": 99}', b"\xff\xfe", b'{"type": "ping"}']
    status, events, _ = serve_lines(b"\n".join(lines) + b"\n")
    assert status == 0 and events[0]["type"] == "ready" and events[0]["version"] == protocol.PROTOCOL_VERSION
    assert [(e["type"], e.get("code")) for e in events[1:]] == [("error", "protocol")] * 4 + [("pong", None)]
    assert "unknown message type 'launch'" in events[2]["message"] and "version 99" in events[3]["message"]


requests = st.fixed_dictionaries(
    {"type": st.sampled_from([*protocol.REQUESTS, *protocol.EVENTS, "x"])},
    optional={"id": st.text(max_size=8) | json_values, "config": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
              "version": st.integers(0, 2)},
)
lines = st.binary(max_size=80) | requests.map(lambda m: json.dumps(m).encode()) | st.text(max_size=40).map(str.encode)


@settings(max_examples=150, deadline=None)
@given(st.lists(lines, min_size=1, max_size=4))
def test_fuzzed_input_gets_events_only_and_one_protocol_error_per_bad_line(chunks):
    payload = b"\n".join(chunks) + b"\n"
    expected_errors = 0
    for line in payload.split(b"\n"):
        if not line.strip():
            continue  # blank lines are skipped
        try:
            if parse_request(line)["type"] == "shutdown":
                break  # the server stops reading here
        except ProtocolError:
            expected_errors += 1
    status, events, server = serve_lines(payload)
    assert status == 0 and events[0]["type"] == "ready"
    for event in events:
        protocol.decode(json.dumps(event), protocol.EVENTS)  # each one a well-formed event
    assert sum(e["type"] == "error" and e["code"] == "protocol" for e in events) == expected_errors
    assert server.run is None  # no fuzzed config started a run


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=4))
@example({"m1": 0})  # a rule between two fields (m2 <= m1) broken by the one the user set
@example({"t_max": 5})
@example({"textureless_prob": 1.0})
def test_build_config_names_the_field_of_any_bad_value(changes):
    values = {"prompt": "a red torus", **changes, "guidance": "analytic", "device": "cpu"}
    try:
        config = build_config(values)
    except ConfigError as exc:
        assert set(exc.fields) & values.keys(), exc  # a field the user set and must fix
        return
    except ValueError as exc:  # the analytic prior cannot read the prompt, or a targets file
        assert "analytic" in str(exc) or "targets" in str(exc), exc
        return
    assert isinstance(config, GenerationConfig)


def test_cancel_right_after_generate_still_ends_with_a_mesh(tmp_path):
    out = io.StringIO()
    server = Server(out, "cpu")
    server.generate("c", {**tiny_config(steps=2000).to_dict(), "run_dir": str(tmp_path / "run")})
    server.handle({"type": "cancel", "id": "c"})  # while the run is still being set up
    server.run.thread.join(120)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[-1]["type"] == "done" and events[-1]["outputs"]["steps_done"] < 2000
    (mesh,) = [e for e in events if e["type"] == "mesh"]
    assert mesh["n_faces"] > 0 and (tmp_path / "run" / "mesh.glb").is_file()


def test_an_output_folder_that_cannot_be_made_is_an_error_event(tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    out = io.StringIO()
    server = Server(out, "cpu")
    server.generate("o", {**tiny_config().to_dict(), "out": str(blocker / "runs")})
    (event,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (event["type"], event["id"], event["code"]) == ("error", "o", "output") and "writable" in event["hint"]
    assert server.run is None
