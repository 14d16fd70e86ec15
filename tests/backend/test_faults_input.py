"""Issue 6, bad input: `python -m backend generate` ends in one message naming the field or the
problem (no traceback), exits non-zero, and writes nothing outside a run folder.

The CLI runs in-process here (`cli.main`, as test_guidance_stable_diffusion does): an exception
escaping it fails the test, which is what a traceback would be. test_cli.py runs it as a subprocess.
"""

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image

from backend import cli
from backend.config import GenerationConfig
from backend.run_folder import MAX_SLUG_CHARS, new_run_dir, slugify

TINY_FLAGS = [
    "--guidance", "analytic", "--device", "cpu", "--steps", "4", "--resolution", "16", "--preview-resolution", "16",
    "--samples-per-ray", "16", "--encoding", "dense", "--dense-resolution", "16", "--mesh-resolution", "24", "--texture-size", "256",
    "--preview-every", "2", "--checkpoint-every", "2", "--quiet",
]


@pytest.fixture
def generate(tmp_path, monkeypatch, capsys):
    """generate(*args) -> (exit status, stdout, stderr), run from an empty working folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    handler = signal.getsignal(signal.SIGINT)  # generate installs its own Ctrl-C handler

    def run(*args):
        status = cli.main(["generate", *args])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return status, out, err

    yield run
    signal.signal(signal.SIGINT, handler)
    assert not list(cwd.iterdir()), "something was written to the working folder"


# ---------------------------------------------------------------------- prompts and values
@pytest.mark.parametrize("args, words", [
    ([""], "prompt: must not be empty"),
    (["  \t "], "prompt: must not be empty"),
    ([], "prompt: must not be empty"),
    (["a red torus", "--s1", "0"], "s1: must be > 0"),
    (["a red torus", "--s2", "-5"], "s2: must be > 0"),
    (["a red torus", "--t-min", "500", "--t-max", "400"], "t_min: must be < t_max (400)"),
    (["a red torus", "--steps", "-1"], "steps: must be an integer from 1"),
    (["a red torus", "--resolution", "2048"], "resolution: must be an integer from 16 to 1024"),
    (["a red torus", "--seed", "-1"], "seed: must be an integer from 0 to 4294967295"),
    (["a red torus", "--seed", "4294967296"], "seed: must be an integer from 0 to 4294967295"),
    (["a red torus", "--guidance-scale", "-2"], "guidance_scale: must be between 0 and 1000"),
    (["a red torus", "--schedule", "cosine"], "schedule: must be one of tp, uniform, linear"),
    (["a mauve torus"], "does not know 'mauve'"),
    (["a red dodecahedron"], "does not know 'dodecahedron'"),
])
def test_bad_input_exits_2_naming_the_field_and_writes_nothing(generate, tmp_path, args, words):
    out = tmp_path / "runs"
    status, stdout, stderr = generate(*TINY_FLAGS, *args, "--out", str(out))
    assert status == 2 and words in stderr and stdout == ""
    assert stderr.startswith("error: ") and len(stderr.splitlines()) == 1
    assert not out.exists()


def test_unknown_words_of_a_long_prompt_are_listed_briefly(generate, tmp_path):
    words = " ".join(f"word{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}" for i in range(2000))
    status, _, stderr = generate(words, *TINY_FLAGS, "--out", str(tmp_path / "runs"))
    assert status == 2 and "more words" in stderr and len(stderr) < 1000


HOSTILE_PROMPT = "../../a red torus/\\ 🍩 赤いトーラス, a red torus"  # path characters, emoji, CJK
LONG_PROMPT = (HOSTILE_PROMPT + ", a red torus" * 800)[:9_990].rsplit(",", 1)[0].ljust(10_000, "!")


def test_a_10000_character_unicode_prompt_with_path_characters_runs_in_a_sanitised_folder(generate, tmp_path):
    assert len(LONG_PROMPT) == 10_000
    out = tmp_path / "runs"
    status, stdout, stderr = generate(LONG_PROMPT, *TINY_FLAGS, "--out", str(out))
    assert status == 0, stderr
    (run_dir,) = out.iterdir()
    assert Path(stdout.strip()) == run_dir and len(run_dir.name) < 100
    assert run_dir.name.split("-", 2)[2].startswith("a-red-torus-a-red-torus")  # <date>-<time>-<slug>-s0
    assert json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["prompt"] == LONG_PROMPT  # kept whole
    assert (run_dir / "mesh.glb").is_file()


@pytest.mark.parametrize("prompt", ["../../x", "/", "\\", "..", "a/b\\c", "🍩🍩", "赤いトーラス", "CON", " . ", "x\x00y"])
def test_run_folder_of_any_prompt_is_a_new_child_of_out(tmp_path, prompt):
    run_dir = new_run_dir(tmp_path, prompt, 7)
    assert run_dir.parent == tmp_path and run_dir.is_dir() and run_dir.name.endswith("-s7")
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in run_dir.name)


try:
    from hypothesis import given, settings, strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the dev extras
    given = None

if given is not None:

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=300))
    def test_slug_of_any_text_is_a_safe_folder_name(text):
        slug = slugify(text)
        assert 0 < len(slug) <= MAX_SLUG_CHARS and set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
        assert not slug.startswith("-") and not slug.endswith("-")


# ---------------------------------------------------------------------- models
def corrupt_model(folder: Path) -> Path:
    """A diffusers layout whose UNet config is right and whose weight file is cut short."""
    from backend.guidance.make_model import SHAPES

    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (folder / name).mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **SHAPES["tiny"].unet}))
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\xff\x00\x00\x00\x00\x00\x00\x00{\"__meta")
    return folder


@pytest.mark.parametrize("model, words", [
    ("nowhere", "no model folder at"),
    ("empty", "has no model_index.json"),
    ("corrupt", "cannot load the unet"),
])
def test_bad_model_folder_is_one_message_with_a_hint(generate, tmp_path, model, words):
    folder = tmp_path / model
    if model == "empty":
        folder.mkdir()
    elif model == "corrupt":
        corrupt_model(folder)
    out = tmp_path / "runs"
    status, _, stderr = generate("a red cube", *TINY_FLAGS[2:], "--guidance", "sd", "--model", str(folder), "--out", str(out))
    assert status == 1 and words in stderr and "\nhint: " in stderr
    if model == "corrupt":  # found only when loading: the run folder exists and holds only its config and log
        (run_dir,) = out.iterdir()
        assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "log.txt", "previews"]
    else:
        assert not out.exists()


# ---------------------------------------------------------------------- resume
def test_resume_of_a_folder_without_config_or_checkpoint_or_with_a_corrupt_one(generate, tmp_path):
    status, _, stderr = generate("--resume", str(tmp_path / "missing"))
    assert status == 2 and "no readable config.json" in stderr
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = GenerationConfig(prompt="a red torus", guidance="analytic", device="cpu", steps=4, resolution=16, encoding="dense")
    (run_dir / "config.json").write_text(config.to_json())
    status, _, stderr = generate("--resume", str(run_dir))
    assert status == 1 and "no checkpoint.pt" in stderr and "hint:" in stderr
    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    status, _, stderr = generate("--resume", str(run_dir))
    assert status == 1 and "is unreadable" in stderr
    assert (run_dir / "checkpoint.pt").read_bytes() == b"PK\x03\x04 truncated"  # left as it was


# ---------------------------------------------------------------------- the output folder
def test_output_folder_that_cannot_be_made(generate, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    status, _, stderr = generate("a red torus", *TINY_FLAGS, "--out", str(blocker / "runs"))
    assert status == 1 and "cannot make a run folder" in stderr and "--out" in stderr
    status, _, stderr = generate("a red torus", *TINY_FLAGS, "--run-dir", str(blocker / "run"))
    assert status == 1 and "cannot write" in stderr and "hint:" in stderr
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders (see the test above)")
def test_read_only_output_folder(generate, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        status, _, stderr = generate("a red torus", *TINY_FLAGS, "--out", str(locked))
    finally:
        locked.chmod(0o700)
    assert status == 1 and "Permission denied" in stderr and not list(locked.iterdir())


def test_disk_full_stops_with_a_message_and_keeps_the_last_complete_files(generate, tmp_path, monkeypatch):
    real_save, saves = torch.save, []

    def save(obj, path, *args, **kwargs):  # the second checkpoint meets a full disk halfway
        saves.append(path)
        if len(saves) == 2:
            Path(path).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run_dir = tmp_path / "run"
    status, stdout, stderr = generate("a red torus", *TINY_FLAGS, "--run-dir", str(run_dir))
    assert status == 1 and stdout == ""
    assert "the disk is full" in stderr and f"--resume {run_dir}" in stderr
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 2  # the last complete one
    GenerationConfig.from_dict(json.loads((run_dir / "config.json").read_text())).validate()
    previews = sorted((run_dir / "previews").iterdir())
    assert [p.name for p in previews] == ["step_00002.png", "step_00004.png"]
    for path in previews:
        Image.open(path).load()  # complete PNGs
    assert not [p for p in run_dir.rglob(".*") if p.is_file()]  # the half-written temporary file is gone


def test_artifacts_get_the_users_usual_permissions(tmp_path):
    """Written through a temporary file, yet readable like any file the user makes (umask, not 0600)."""
    from backend.run_folder import atomic_write_text

    umask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "config.json", "{}")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644 and path.read_text() == "{}"
