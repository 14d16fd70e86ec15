"""backend/serve/remote_policy.py: what a remote client may ask of `serve --listen` and what it is
shown (issue 17), on its own and through a real loopback TCP server."""

import dataclasses
import datetime
import json
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from backend import protocol
from backend.config import HUB_PREFIX, ConfigError, GenerationConfig
from backend.serve.remote_policy import PATH_FIELDS, SERVER_PATH, TEXT_FIELDS, RemotePolicy

from test_server import TINY
from test_tcp_server import Client, connect, start_server, stop_server

TARGETS = {"targets": [{"name": "red cube", "parts": [{"shape": "cube", "color": "red", "scale": 0.8}]}]}
QUICK = {**TINY, "steps": 2, "preview_every": 1, "checkpoint_every": 0}


def files_under(folder: Path, skip: tuple[Path, ...] = ()) -> dict[str, float]:
    """Every file and folder under `folder` (symlinks not followed) -> its modification time."""
    found = {}
    for path in folder.rglob("*"):
        if not any(path == s or path.is_relative_to(s) for s in skip):
            found[str(path)] = path.lstat().st_mtime_ns
    return found


def make_tree(folder: Path) -> dict[str, Path]:
    """The server's world: its output root, a models root, and what lies outside both."""
    paths = {name: folder / name for name in ("root", "models", "outside")}
    for path in paths.values():
        path.mkdir()
    for name in ("offered", "broken"):  # model folders the operator offers (neither complete: they fail fast)
        (paths["models"] / name).mkdir()
        (paths["models"] / name / "model_index.json").write_text("{}")
    (paths["outside"] / "model").mkdir()  # a model folder outside the roots
    (paths["outside"] / "model" / "model_index.json").write_text("{}")
    (paths["outside"] / "targets.json").write_text(json.dumps(TARGETS))
    (paths["models"] / "escape").symlink_to(paths["outside"] / "model")
    (paths["root"] / "link").symlink_to(paths["outside"])
    return paths


# ---------------------------------------------------------------------- the policy on its own
def test_every_text_field_of_the_config_is_classified():
    text, classified = {f.name for f in dataclasses.fields(GenerationConfig) if "str" in str(f.type)}, {*PATH_FIELDS, *TEXT_FIELDS}
    assert text <= classified and not set(PATH_FIELDS) & set(TEXT_FIELDS), (
        f"{sorted(text - classified)}: a new text field of GenerationConfig; add it to remote_policy.TEXT_FIELDS, or, if it can name "
        "a path on the server, to PATH_FIELDS with its rule in RemotePolicy.apply and a test here")


def test_apply_refuses_paths_and_resolves_models(tmp_path):
    paths = make_tree(tmp_path)
    policy = RemotePolicy(paths["root"], (paths["models"],))
    applied = policy.apply({"prompt": "a red cube", "targets": TARGETS})
    assert applied["out"] == str(paths["root"].resolve()) and applied["weights"] == "safetensors" and applied["targets"] == TARGETS
    assert applied["model"] == HUB_PREFIX + GenerationConfig.model  # a hub id never read as a local folder
    assert policy.apply({"prompt": "x", "model": "offered"})["model"] == str((paths["models"] / "offered").resolve())
    refused = {
        "run_dir": [str(paths["outside"]), "link", str(paths["root"] / "x")], "out": ["../outside", str(paths["root"])],
        "targets": [str(paths["outside"] / "targets.json"), "/etc/passwd"], "weights": ["any"],
        "model": [str(paths["outside"] / "model"), "../outside/model", "offered/../../outside/model", "~/models", str(paths["models"]),
                  "", "a/b/c"],
    }
    for field, values in refused.items():
        for value in values:
            with pytest.raises(ConfigError) as info:
                policy.apply({"prompt": "x", field: value})
            assert info.value.field == field and str(tmp_path) not in str(info.value), (field, value, str(info.value))
    with pytest.raises(ConfigError, match=r"offers \(broken, offered\)"):  # what is on offer, by name; not the link leading out
        policy.apply({"prompt": "x", "model": "/models/offered"})
    assert policy.apply({"prompt": "x", "model": "escape"})["model"] == HUB_PREFIX + "escape"  # the link is not followed
    assert RemotePolicy(paths["root"], allow_pickle_weights=True).apply({"prompt": "x", "weights": "any"})["weights"] == "any"


def test_only_run_folders_the_server_made_are_refined(tmp_path):
    paths = make_tree(tmp_path)
    policy, made = RemotePolicy(paths["root"]), paths["root"] / "20250101-120000-a-red-torus-s0"
    made.mkdir()
    assert policy.apply({"prompt": "x", "refine_from": made.name})["refine_from"] == str(made.resolve())
    assert policy.apply({"prompt": "x", "refine_from": made.name + "/"})["refine_from"] == str(made.resolve())
    (paths["root"] / "file").write_text("")
    variations = paths["root"] / "20250101-130000-a-torus-s0"  # a variations run: its seeds' folders can be refined
    (variations / "s3").mkdir(parents=True)
    (variations / "variations.json").write_text("{}")
    (variations / "s4").symlink_to(paths["outside"])
    for name in (f"{variations.name}/s3", f"{variations.name}\\s3/"):
        assert policy.apply({"prompt": "x", "refine_from": name})["refine_from"] == str(variations / "s3")
    for name in ("link", str(made), "../outside", f"{made.name}/previews", ".", "..", "", "file", "missing", 3, "link/model",
                 f"{variations.name}/s4", f"{variations.name}/s3/..", f"{variations.name}/../{made.name}", f"{variations.name}/missing",
                 f"{variations.name}/s3/previews", f"/{variations.name}/s3", f"{variations.name}//s3"):
        with pytest.raises(ConfigError) as info:
            policy.apply({"prompt": "x", "refine_from": name} if name != "" else {"prompt": "x", "refine_from": " "})
        assert info.value.field == "refine_from" and str(tmp_path) not in str(info.value), name
    with pytest.raises(ConfigError) as info:  # a mesh on the client's machine: no such file here, and no path to probe
        policy.apply({"prompt": "x", "init_mesh": str(paths["outside"] / "model" / "model_index.json")})
    assert info.value.field == "init_mesh" and str(tmp_path) not in str(info.value)


def test_redact_keeps_paths_relative_to_their_root_and_hides_the_rest(tmp_path):
    paths = make_tree(tmp_path)
    policy = RemotePolicy(paths["root"], (paths["models"],))
    root, models = paths["root"].resolve(), paths["models"].resolve()
    text = (f"cannot write {root}/run-1/mesh.glb; {models}/broken lacks unet/; {root} is full; {paths['outside']}/x and /etc/passwd "
            "are hidden; C:\\Users\\me\\x too; not m2/m1, 1/2 or https://huggingface.co/org/model")
    assert policy.redact(text) == (f"cannot write run-1/mesh.glb; broken lacks unet/; . is full; {SERVER_PATH} and {SERVER_PATH} "
                                   f"are hidden; {SERVER_PATH} too; not m2/m1, 1/2 or https://huggingface.co/org/model")
    event = protocol.done("/etc/passwd", {"run_dir": str(root / "run-1"), "mesh_glb": str(root / "run-1" / "mesh.glb"), "steps_done": 3})
    assert policy.outgoing(event) == {**event, "outputs": {"run_dir": "run-1", "mesh_glb": "run-1/mesh.glb", "steps_done": 3}}


def test_outgoing_bounds_the_file_bytes(tmp_path):
    policy = RemotePolicy(tmp_path, max_file_bytes=100)
    (tmp_path / "small.png").write_bytes(b"\x89PNG" + b"\0" * 96)
    (tmp_path / "big.glb").write_bytes(b"\0" * 101)
    small = policy.outgoing(protocol.preview("r", 1, str(tmp_path / "small.png"), 1, 1))
    assert small["path"] == "small.png" and protocol.file_data(small) == (tmp_path / "small.png").read_bytes()
    big = policy.outgoing(protocol.mesh("r", str(tmp_path / "big.glb"), 1, 1))
    assert "data" not in big and "larger than" in big["data_error"] and "--max-file-mib" in big["data_error"]
    with pytest.raises(protocol.ProtocolError, match="larger than"):
        protocol.file_data(big)
    gone = policy.outgoing(protocol.mesh("r", str(tmp_path / "gone.glb"), 1, 1))
    assert "unreadable" in gone["data_error"] and str(tmp_path) not in gone["data_error"]


# ---------------------------------------------------------------------- over a real loopback TCP server
@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    folder = tmp_path_factory.mktemp("remote")
    paths = make_tree(folder)
    proc = start_server(folder, "--out", str(paths["root"]), "--models", str(paths["models"]))
    proc.paths, proc.folder = paths, folder
    proc.client = connect(proc.port)
    yield proc
    proc.client.close()
    stop_server(proc)


def outcome(client: Client, run_id: str, timeout: float = 120.0) -> list[dict]:
    """The events up to the run's done or error."""
    deadline, seen = time.monotonic() + timeout, []
    while not seen or not (seen[-1]["type"] in ("done", "error") and seen[-1].get("id") == run_id):
        event = client.next(max(deadline - time.monotonic(), 0.01))
        assert event is not None, f"connection closed: {seen[-3:]}"
        seen.append(event)
    return seen


def assert_no_server_path(remote, events: list[dict]) -> None:
    text = json.dumps([{k: v for k, v in e.items() if k not in ("data", "sha256")} for e in events])
    for path in (remote.folder, remote.folder.resolve(), Path.home(), Path(__file__).parents[3]):
        assert str(path) not in text, (str(path), text[:2000])


def test_paths_from_a_remote_client_are_refused_and_nothing_is_written_outside_the_root(remote):
    paths, before = remote.paths, files_under(remote.folder, skip=(remote.paths["root"], remote.log_path))
    refused = [
        ("run_dir", {"run_dir": str(paths["outside"] / "run")}), ("run_dir", {"run_dir": "link"}),
        ("out", {"out": "../outside"}), ("out", {"out": str(paths["root"] / ".." / "outside")}),
        ("targets", {"targets": str(paths["outside"] / "targets.json")}), ("targets", {"targets": "/etc/passwd"}),
        ("model", {"guidance": "sd", "model": str(paths["outside"] / "model")}), ("model", {"guidance": "sd", "model": "../outside/model"}),
        ("weights", {"weights": "any"}),
    ]
    events = []
    for index, (field, change) in enumerate(refused):
        remote.client.send("generate", id=f"r{index}", config={**QUICK, **change})
        events += outcome(remote.client, f"r{index}")
        assert (events[-1]["type"], events[-1]["code"], events[-1].get("field")) == ("error", "config", field), (change, events[-1])
    broken = "b"  # a model the operator offers, but incomplete: the error names it as the client did
    remote.client.send("generate", id=broken, config={**QUICK, "guidance": "sd", "model": "broken"})
    events += outcome(remote.client, broken)
    assert events[-1]["code"] == "model_layout" and "broken" in events[-1]["message"], events[-1]
    assert_no_server_path(remote, events)
    assert files_under(remote.folder, skip=(paths["root"], remote.log_path)) == before
    assert sorted(p.name for p in paths["outside"].iterdir()) == ["model", "targets.json"]
    log = remote.log_path.read_text()
    assert str(paths["outside"] / "targets.json") not in log  # never read, so never named (the full errors are in the log)
    assert "error config: run_dir: a remote client cannot choose" in log
    assert f"{paths['models'].resolve() / 'broken'} is not a complete" in log  # the operator sees the full message


def test_targets_as_data_and_a_symlink_in_the_root_that_points_outside(remote):
    paths, seed = remote.paths, 4242
    now = datetime.datetime.now()
    for second in range(90):  # the names the server would give this run in the next 90 s lead outside
        stamp = (now + datetime.timedelta(seconds=second)).strftime("%Y%m%d-%H%M%S")
        (paths["root"] / f"{stamp}-a-red-cube-s{seed}").symlink_to(paths["outside"])
    remote.client.send("generate", id="data", config={**QUICK, "prompt": "a red cube", "seed": seed, "targets": TARGETS})
    events = outcome(remote.client, "data")
    assert events[-1]["type"] == "done", events[-1]
    run_dir = paths["root"] / events[-1]["outputs"]["run_dir"]
    assert run_dir.parent == paths["root"] and run_dir.is_dir() and not run_dir.is_symlink() and run_dir.name.endswith("-2")
    assert json.loads((run_dir / "config.json").read_text())["targets"] == TARGETS  # the run folder keeps its targets
    assert sorted(p.name for p in paths["outside"].iterdir()) == ["model", "targets.json"]
    assert_no_server_path(remote, events)


def test_a_remote_refine_continues_only_a_run_this_server_made(remote):
    paths = remote.paths
    remote.client.send("generate", id="base", config=QUICK)
    events = outcome(remote.client, "base")
    assert events[-1]["type"] == "done", events[-1]
    name = events[-1]["outputs"]["run_dir"]  # relative to the output root, as every path in the events
    remote.client.send("generate", id="more", config={"prompt": QUICK["prompt"], "refine_from": name, "steps": QUICK["steps"] + 2})
    events += outcome(remote.client, "more")
    assert events[-1]["type"] == "done" and (paths["root"] / events[-1]["outputs"]["run_dir"]).parent == paths["root"], events[-1]
    for index, change in enumerate([{"refine_from": "link"}, {"refine_from": str(paths["root"] / name)}, {"refine_from": "../outside"},
                                    {"init_mesh": str(paths["outside"] / "model" / "model_index.json")}]):
        remote.client.send("generate", id=f"x{index}", config={**QUICK, **change})
        events += outcome(remote.client, f"x{index}")
        assert (events[-1]["code"], events[-1].get("field")) == ("config", *change), (change, events[-1])
    assert sorted(p.name for p in paths["outside"].iterdir()) == ["model", "targets.json"]
    assert_no_server_path(remote, events)


def test_a_remote_refine_continues_one_take_of_a_variations_run(remote):
    remote.client.send("generate", id="takes", config={**QUICK, "variations": 2})
    events = outcome(remote.client, "takes")
    assert events[-1]["type"] == "done", events[-1]
    take = events[-1]["outputs"]["variations"][1]["run_dir"]  # "RUN/s1", as the panel's Variations row keeps it
    assert take == events[-1]["outputs"]["run_dir"] + "/s1"
    remote.client.send("generate", id="push", config={"prompt": QUICK["prompt"], "refine_from": take, "steps": QUICK["steps"] + 2})
    events += outcome(remote.client, "push")
    assert events[-1]["type"] == "done" and events[-1]["outputs"]["run_dir"] == take + "-refine-4", events[-1]
    root = remote.paths["root"]
    assert (root / take / "checkpoint.pt").is_file() and (root / (take + "-refine-4") / "mesh.glb").is_file()
    assert_no_server_path(remote, events)


path_values = st.sampled_from([
    "", "/etc/passwd", "..", "../outside", "link", "link/x", "runs", "~/x", "C:\\x", "{outside}", "{outside}/model", "a/b/c", "\x00",
    "{outside}/targets.json", "{root}", "{root}/x", "{root}/link/x", "{models}/offered", "offered", "escape", "hub:org/name",
])
fuzzed = st.fixed_dictionaries({}, optional={
    "run_dir": path_values, "out": path_values, "targets": path_values | st.just(TARGETS) | st.just({"targets": [{}]}),
    "model": path_values, "refine_from": path_values, "init_mesh": path_values,  # the last two: issue 12's, unknown fields before it
    "guidance": st.sampled_from(["analytic", "sd"]), "weights": st.sampled_from(["any", "safetensors", "x"]),
    "steps": st.integers(-1, 2), "extra": st.dictionaries(st.sampled_from(["grad_clip", "path"]), path_values, max_size=1),
    "prompt": st.sampled_from(["a red torus", "", "a blue cube", "../../etc"]),
})


@settings(max_examples=25, deadline=None)
@given(fuzzed)
def test_a_fuzzed_config_over_tcp_writes_only_under_the_root_and_shows_no_server_path(remote, change):
    paths = remote.paths
    before = files_under(remote.folder, skip=(paths["root"], remote.log_path))
    values = {**QUICK, **{key: value.format(**paths) if isinstance(value, str) else value for key, value in change.items()}}
    remote.client.send("generate", id="fuzz", config=values)
    events = outcome(remote.client, "fuzz")
    assert_no_server_path(remote, events)
    assert files_under(remote.folder, skip=(paths["root"], remote.log_path)) == before
    assert sorted(p.name for p in paths["outside"].iterdir()) == ["model", "targets.json"]
    if events[-1]["type"] == "done":
        assert (paths["root"] / events[-1]["outputs"]["run_dir"]).parent == paths["root"]


@pytest.fixture
def strict(tmp_path):
    proc = start_server(tmp_path, "--out", str(tmp_path / "root"), "--max-file-mib", "0.005", "--idle-timeout", "2")
    yield proc
    stop_server(proc)


def test_file_size_limit_and_idle_timeout(strict):
    client = connect(strict.port)
    stop_pinging = threading.Event()

    def ping():  # as the add-on's Keep Alive does: a client that only watches a run still says something
        while not stop_pinging.wait(0.5):
            client.send("ping")

    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    client.send("generate", id="small", config={**TINY, "steps": 4, "preview_every": 2})
    events = outcome(client, "small")
    time.sleep(3)  # past the idle timeout, pinging
    stop_pinging.set()
    pinger.join()
    previews, (mesh,) = [e for e in events if e["type"] == "preview"], [e for e in events if e["type"] == "mesh"]
    assert previews and all(protocol.file_data(e).startswith(b"\x89PNG") for e in previews)  # a few hundred bytes: under 5 KiB
    assert "data" not in mesh and "larger than the 0.005 MiB" in mesh["data_error"], mesh  # tens of KB: over it, said so
    assert events[-1]["type"] == "done"
    started = time.monotonic()
    while (event := client.next(10))["type"] == "pong":
        pass
    assert (event["type"], event["code"]) == ("error", "idle") and "--idle-timeout" in event["message"], event
    assert client.next(5) is None and time.monotonic() - started < 4  # then closed
    client.close()
    again = connect(strict.port)  # the slot is free again
    again.close()
