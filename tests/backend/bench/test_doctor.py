"""backend/bench/doctor.py: `python -m backend doctor --json`, what the add-on's Test backend reads.

The keys below are a contract with the add-on: keep them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.bench.doctor import verdict

ROOT = Path(__file__).resolve().parents[3]
CONTRACT = {  # key -> the types its value may have
    "device": (str,), "torch": (str,), "cuda": (str, type(None)), "diffusers": (str, type(None)), "tcnn": (bool,),
    "precision": (str,), "step_ms": (float,), "floor_ms": (float,), "ratio": (float,), "peak_mem_mb": (float,), "ok": (bool,),
    "problems": (list,),
}


def doctor(*flags):
    """As from a fresh clone: the repository on PYTHONPATH, run from elsewhere."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "backend", "doctor", *flags, "--json"], capture_output=True, text=True, timeout=600,
                            env=env, cwd=Path.home() if Path.home().is_dir() else "/")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_doctor_on_the_cpu_times_the_analytic_step_and_proves_the_sd_path():
    report = doctor("--device", "cpu")
    for key, types in CONTRACT.items():
        assert isinstance(report[key], types), (key, report[key])
    assert report["device"] == "cpu" and report["precision"] == "fp32" and report["guidance"] == "analytic"
    assert report["step_ms"] > 0 and report["floor_ms"] > 0
    assert report["ratio"] == pytest.approx(report["step_ms"] / report["floor_ms"], rel=1e-3)
    assert report["sd_check"]["ok"] is True and report["fused_adam"] is True
    assert report["ok"] is (report["problems"] == []) and all(isinstance(p, str) and p.endswith(".") for p in report["problems"])
    assert report["torch"] == torch.__version__ and report["memory_total_mb"] > 0
    assert any("analytic prior" in note for note in report["notes"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_doctor_asked_for_a_missing_gpu_says_so_and_still_answers():
    report = doctor("--device", "cuda")
    assert report["ok"] is False and report["step_ms"] is None and report["device"] is None
    assert any("cuda was asked for but no CUDA device is available" in problem for problem in report["problems"])


def base_report(**changes):
    report = {"torch": "2.13.0+cpu", "cuda": None, "nvidia_gpus": [], "diffusers": "0.42", "transformers": "5.2", "tcnn": False,
              "device": "cpu", "model": "m", "error": None, "bench": {"steps": 4, "dtype": "float16", "skipped_steps": 0}}
    return {**report, **changes}


def test_the_verdict_says_what_to_fix():
    assert verdict(base_report())[0] == []
    problems, _ = verdict(base_report(nvidia_gpus=["NVIDIA GeForce RTX 4070"]))
    assert len(problems) == 1 and "CPU-only build" in problems[0] and "RTX 4070" in problems[0] and "cu128" in problems[0]
    problems, _ = verdict(base_report(diffusers=None))
    assert "pip install diffusers transformers" in problems[0]
    problems, _ = verdict(base_report(device="cuda", bench={"steps": 4, "dtype": "float16", "skipped_steps": 2}))
    assert "2 of 4 timed steps were not finite in float16" in problems[0] and "bf16" in problems[0]
    _, notes = verdict(base_report(device="cuda", model_cached=False, memory_total_mb=6144))
    assert any("tiny-cuda-nn is not installed" in n for n in notes) and any("downloads it" in n for n in notes)
    assert any("--low-vram" in n for n in notes)
