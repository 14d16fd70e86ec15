"""backend/bench/step.py: `bench step` prints one JSON object with the step, its floor and their ratio."""

import json

import pytest

from backend import cli
from backend.guidance.make_model import make_model

KEYS = {"device", "guidance", "dtype", "resolution", "guidance_input", "step_ms", "floor_ms", "ratio", "peak_mem_mb", "floor"}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return make_model("tiny", tmp_path_factory.mktemp("sd") / "tiny")


def bench(capsys, *flags: str) -> dict:
    argv = ["bench", "step", "--device", "cpu", "--steps", "2", "--warmup", "1", "--resolution", "16", "--samples-per-ray", "16", *flags]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1  # stdout is the JSON only
    return json.loads(out)


def test_bench_step_sd_tiny_on_cpu(capsys, tiny_model):
    result = bench(capsys, "--guidance", "sd", "--model", str(tiny_model))
    assert KEYS <= result.keys()
    assert result["guidance"] == "sd" and result["dtype"] == "float32" and result["device"].startswith("cpu")
    assert result["guidance_input"] == 32  # the tiny model's own input size (512 for SD)
    assert result["step_ms"] > 0 and result["floor_ms"] > 0 and result["peak_mem_mb"] > 0
    assert result["ratio"] == pytest.approx(result["step_ms"] / result["floor_ms"], rel=1e-3)
    assert "UNet" in result["floor"] and "VAE" in result["floor"]


def test_bench_step_analytic_floor_is_the_exact_score(capsys):
    result = bench(capsys, "--guidance", "analytic", "--encoding", "dense")
    assert result["guidance"] == "analytic" and result["model"] is None
    assert "exact score" in result["floor"] and result["ratio"] > 0


def test_bench_step_bad_model_is_one_line(capsys, tmp_path):
    assert cli.main(["bench", "step", "--device", "cpu", "--guidance", "sd", "--model", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and "model_index.json" in captured.err
