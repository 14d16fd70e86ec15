"""backend/guidance/hub.py against a local stand-in for the Hugging Face Hub (tests/fake_hub.py)."""

import threading
import time

import pytest
from fake_hub import FakeHub

from backend.errors import TrainingError
from backend.guidance import hub
from backend.guidance.make_model import make_model

SD21_LISTING = {  # the shape of stabilityai/stable-diffusion-2-1-base's file list (sizes made up)
    "model_index.json": 1, "README.md": 1, "v2-1_512-ema-pruned.ckpt": 5_000, "v2-1_512-ema-pruned.safetensors": 5_000,
    "feature_extractor/preprocessor_config.json": 1, "scheduler/scheduler_config.json": 1,
    "text_encoder/config.json": 1, "text_encoder/model.safetensors": 1_300, "text_encoder/model.fp16.safetensors": 650,
    "text_encoder/pytorch_model.bin": 1_300, "tokenizer/merges.txt": 1, "tokenizer/vocab.json": 1,
    "tokenizer/special_tokens_map.json": 1, "tokenizer/tokenizer_config.json": 1,
    "unet/config.json": 1, "unet/diffusion_pytorch_model.safetensors": 3_400, "unet/diffusion_pytorch_model.fp16.safetensors": 1_700,
    "unet/diffusion_pytorch_model.bin": 3_400, "vae/config.json": 1, "vae/diffusion_pytorch_model.bin": 330,
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_model("tiny", tmp_path_factory.mktemp("sd") / "tiny")


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A fake Hub at HF_ENDPOINT (the download process reads it) and a fresh cache (passed to it)."""
    import huggingface_hub.constants

    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    yield server
    server.close()


def test_only_the_files_the_guidance_loads_are_fetched():
    chosen = hub.sd_files(SD21_LISTING)
    assert sorted(chosen) == sorted([
        "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.safetensors",
        "tokenizer/merges.txt", "tokenizer/vocab.json", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.bin",  # no safetensors there: the pickle
    ])  # no root checkpoints, fp16 variants, duplicate pickles, feature extractor or README


def test_download_reports_bytes_and_the_cache_then_has_it(fake_hub, tiny_model):
    fake_hub.add("acme/tiny-sd", tiny_model)
    calls = []
    folder = hub.download("acme/tiny-sd", lambda done, total: calls.append((done, total)))
    assert hub.complete_folder(folder) and hub.cached_snapshot("acme/tiny-sd") == folder
    total = sum(path.stat().st_size for path in tiny_model.rglob("*") if path.is_file())
    assert calls[-1] == (total, total) and all(t == total for _, t in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)  # never backwards
    fake_hub.close()  # no network: the cache answers alone
    assert hub.cached_snapshot("acme/tiny-sd") == folder


def test_stop_ends_a_download_at_once_and_a_later_one_resumes(fake_hub, tiny_model):
    fake_hub.add("acme/slow", {**{str(p.relative_to(tiny_model)): p.read_bytes() for p in tiny_model.rglob("*") if p.is_file()},
                               "unet/diffusion_pytorch_model.safetensors": b"\0" * (40 << 20)})
    fake_hub.delay = 0.2  # 1 MiB every 0.2 s: the 40 MiB weights would take 8 s
    stop, calls = threading.Event(), []
    timer = threading.Timer(1.5, stop.set)
    timer.start()
    started = time.monotonic()
    with pytest.raises(TrainingError, match="cancelled while downloading acme/slow") as info:
        hub.download("acme/slow", lambda done, total: calls.append((done, total)), stop)
    took = time.monotonic() - started
    assert info.value.code == "cancelled" and "continues the download" in info.value.hint
    assert took < 1.5 + 2.0, took  # stopped within a heartbeat or two, not after the file
    assert calls and calls[-1][1] > 40 << 20 and calls[-1][0] < calls[-1][1]
    deadline = time.monotonic() + 10
    while ("aborted", "unet/diffusion_pytorch_model.safetensors") not in fake_hub.log:  # the connection was cut
        assert time.monotonic() < deadline, fake_hub.log
        time.sleep(0.1)
    assert hub.cached_snapshot("acme/slow") is None  # incomplete: not taken for a model


@pytest.mark.parametrize("repo, code, words", [
    ("acme/missing", "model_not_found", "no such model"),
    ("acme/not-a-pipeline", "model_layout", "not a diffusers pipeline"),
])
def test_a_missing_model_or_a_repository_that_is_no_pipeline_is_one_error(fake_hub, repo, code, words):
    fake_hub.add("acme/not-a-pipeline", {"README.md": b"hello", "model.safetensors": b"\0" * 10})
    with pytest.raises(TrainingError, match=words) as info:
        hub.download(repo)
    assert info.value.code == code and info.value.hint


def test_an_unreachable_hub_is_model_offline(monkeypatch, tmp_path):
    import huggingface_hub.constants

    server = FakeHub()
    url = server.url
    server.close()  # nothing listens there now
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(TrainingError, match="cannot be reached") as info:
        hub.download("acme/tiny-sd")
    assert info.value.code == "model_offline" and "hf download acme/tiny-sd --local-dir DIR" in info.value.hint


def test_size_text():
    assert hub.size_text(1_200_000_000, 5_210_000_000) == "1.2 / 5.2 GB"
    assert hub.size_text(3_000_000, 340_000_000) == "3.0 / 340.0 MB"


def test_a_download_process_that_dies_is_one_error_with_its_last_words(monkeypatch, tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text("import sys\nsys.stderr.write('ImportError: no module named huggingface_hub\\n')\nsys.exit(3)\n")
    monkeypatch.setattr(hub, "__file__", str(crash))  # the child runs this instead of hub.py
    with pytest.raises(TrainingError, match="exit code 3") as info:
        hub.download("acme/tiny-sd")
    assert "no module named huggingface_hub" in str(info.value) and info.value.code == "model_offline"
