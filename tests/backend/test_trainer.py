"""backend/trainer.py (with checkpoint.py, artifacts.py and readback.py) on tiny CPU runs with the analytic prior."""

import json
import math
import threading

import pytest
import torch
from host_reads import HostReads

from backend.config import GenerationConfig
from backend.errors import TrainingError
from backend.trainer import Trainer

TINY = dict(
    prompt="a red torus", guidance="analytic", device="cpu", steps=12, resolution=16, preview_resolution=16,
    samples_per_ray=16, encoding="dense", dense_resolution=24, mlp_hidden=0, lr=0.05, mesh_resolution=32, texture_size=256,
    preview_every=4, checkpoint_every=5,
)


def tiny_config(**changes):
    return GenerationConfig(**{**TINY, **changes})


def test_run_writes_the_run_folder_and_events(tmp_path):
    events = []
    outputs = Trainer(tiny_config(), tmp_path / "run", on_event=events.append).run()
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["prompt"] == "a red torus"
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["step_00004.png", "step_00008.png", "step_00012.png"]
    assert (run / "checkpoint.pt").exists() and (run / "log.txt").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["t"]) == len(metrics["loss"]) == 12
    assert metrics["t"] == sorted(metrics["t"], reverse=True)  # tp: non-increasing
    assert 0 <= metrics["quality"]["consistency"] <= 1 and metrics["quality"]["best_target_name"] == "red torus"
    kinds = [e["type"] for e in events]
    assert kinds.count("progress") == 12 and kinds[-1] == "done"
    assert [e["step"] for e in events if e["type"] == "progress"] == list(range(1, 13))
    assert outputs["steps_done"] == 12
    assert not list(run.glob(".*tmp*"))  # no temporary files left


def test_the_end_renders_the_ring_once_for_preview_ring_and_quality(tmp_path, monkeypatch):
    from PIL import Image

    from backend.artifacts import RunArtifacts

    trainer = Trainer(tiny_config(steps=6, preview_every=4), tmp_path / "run")
    trainer.setup(False)
    trainer.loop(0)
    calls, render_ring = [], RunArtifacts.render_ring
    monkeypatch.setattr(RunArtifacts, "render_ring", lambda self, *a, **k: calls.append(1) or render_ring(self, *a, **k))
    trainer._finish(0.0)
    trainer.close()
    assert len(calls) == 1
    run = tmp_path / "run"
    preview = torch.tensor(list(Image.open(run / "previews" / "step_00006.png").getdata()))
    separate = trainer.artifacts.render_ring(cameras=trainer.ring[1])[0]  # view 1 (step 6 // 4), rendered alone
    assert torch.equal(preview.reshape(16, 16, 3), (separate.clamp(0, 1) * 255 + 0.5).to(torch.uint8).long())
    quality = trainer.metrics["quality"]["psnr"]
    assert quality == pytest.approx(trainer.artifacts.evaluate_quality()["psnr"], abs=1e-6)


def test_training_moves_the_render_towards_the_target(tmp_path):
    trainer = Trainer(tiny_config(steps=60, preview_every=0, checkpoint_every=0), tmp_path / "run")
    trainer.setup(False)
    before = trainer.artifacts.evaluate_quality()["psnr"]
    trainer.loop(0)
    after = trainer.artifacts.evaluate_quality()["psnr"]
    trainer.close()
    assert after > before + 1.5, (before, after)  # measured +2.0 dB in 60 steps at 16 px


def test_same_seed_same_steps(tmp_path):
    a = Trainer(tiny_config(), tmp_path / "a")
    b = Trainer(tiny_config(), tmp_path / "b")
    a.setup(False), b.setup(False)
    for step in range(3):
        assert a.train_step(step) == b.train_step(step)
    assert torch.equal(a.field.encoding.grid, b.field.encoding.grid)


def test_stop_then_resume_reaches_the_same_step_count(tmp_path):
    stop = threading.Event()

    def on_event(event):
        if event["type"] == "progress" and event["step"] == 7:
            stop.set()

    run = tmp_path / "run"
    first = Trainer(tiny_config(), run, on_event=on_event, stop=stop).run()
    assert first["stopped_at"] == 7 and first["steps_done"] == 7
    assert (run / "mesh.glb").exists()  # a stopped run still exports its mesh
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 7
    resumed = Trainer(tiny_config(), run).run(resume=True)
    assert resumed["steps_done"] == 12
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == list(range(12))


def test_sdf_after_turns_the_voxel_field_into_an_sdf_and_resume_keeps_it(tmp_path):
    stop = threading.Event()

    def on_event(event):
        if event["type"] == "progress" and event["step"] == 9:
            stop.set()

    run = tmp_path / "run"
    config = tiny_config(sdf_after=0.5)  # the switch comes before step 6
    first = Trainer(config, run, on_event=on_event, stop=stop)
    first.run()
    assert first.field.sdf_mode and first.sdf_step == 6
    assert "step 6: the field is now a signed distance" in (run / "log.txt").read_text()
    assert torch.load(run / "checkpoint.pt", weights_only=False)["sdf_mode"] is True
    assert first.artifacts.mesh is not None and (run / "mesh.glb").exists()  # marching cubes at s = 0
    resumed = Trainer(config, run)
    outputs = resumed.run(resume=True)
    assert resumed.field.sdf_mode and outputs["steps_done"] == 12
    assert "now a signed distance" not in (run / "log.txt").read_text().split("resumed from")[-1]  # not converted twice


def test_sdf_after_leaves_a_field_with_an_mlp_as_log_density(tmp_path):
    trainer = Trainer(tiny_config(sdf_after=0.5, mlp_hidden=8, steps=8), tmp_path / "run")
    trainer.run()
    assert trainer.sdf_step is None and not trainer.field.sdf_mode
    assert "sdf_after 0.5 ignored" in (tmp_path / "run" / "log.txt").read_text()


def test_resume_without_or_with_a_corrupt_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint") as info:
        Trainer(tiny_config(), tmp_path / "empty").run(resume=True)
    assert info.value.code == "resume"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="unreadable"):
        Trainer(tiny_config(), bad).run(resume=True)


def poison(trainer, bad_steps):
    """Make the guidance return NaN at the given steps."""
    losses, calls = trainer.guidance.losses, {"n": 0}

    def poisoned(rgb, t, view):
        out = losses(rgb, t, view)
        step, calls["n"] = calls["n"], calls["n"] + 1
        return {name: value * float("nan") for name, value in out.items()} if step in bad_steps else out

    trainer.guidance.losses = poisoned


def test_a_nan_step_is_skipped_and_the_state_kept(tmp_path):
    trainer = Trainer(tiny_config(steps=6), tmp_path / "run")
    trainer.setup(False)
    poison(trainer, {1})
    trainer.train_step(0)
    before = trainer.field.encoding.grid.detach().clone()
    assert trainer.train_step(1) is None
    assert torch.equal(trainer.field.encoding.grid, before)
    assert trainer.train_step(2) is not None


def test_repeated_nan_stops_with_an_error_and_keeps_outputs(tmp_path, monkeypatch):
    monkeypatch.setattr("backend.trainer.MAX_BAD_STEPS", 3)
    trainer = Trainer(tiny_config(steps=10), tmp_path / "run")
    original_setup = trainer.setup

    def setup(resume):
        start = original_setup(resume)
        poison(trainer, set(range(2, 100)))
        return start

    trainer.setup = setup
    with pytest.raises(TrainingError) as info:
        trainer.run()
    assert info.value.code == "non_finite"
    assert (tmp_path / "run" / "checkpoint.pt").exists() and (tmp_path / "run" / "config.json").exists()


# ---------------------------------------------------------------------- the lean step (issue 16)
@pytest.mark.parametrize("warmup, host_reads", [(1.0, 0), (0.0, 1)])
def test_a_queued_step_never_reads_the_device(tmp_path, warmup, host_reads):
    """On a GPU each of these would stall the host. The one read after the warm-up is the shading mode,
    drawn from the host's own generator; normals (textureless shading) take no mask and no read."""
    trainer = Trainer(tiny_config(albedo_warmup=warmup, textureless_prob=1.0, albedo_prob=0.0), tmp_path / "run")
    trainer.setup(False)
    trainer.queue_step(0)
    with HostReads() as reads:
        values = trainer.queue_step(1)
    trainer.close()
    assert dict(reads.ops) == ({"aten._local_scalar_dense": host_reads} if host_reads else {})
    loss, taken, non_finite = values.tolist()
    assert loss > 0 and taken == 1 and non_finite == 0


def test_reading_back_in_blocks_changes_no_number(tmp_path):
    """The loss read every 4 steps (as a GPU run reads every 10) gives the same run; progress events carry the last loss read."""
    runs = {}
    for every in (1, 4):
        events = []
        trainer = Trainer(tiny_config(extra={"read_every": every}), tmp_path / f"every{every}", on_event=events.append)
        trainer.run()
        runs[every] = (json.loads((tmp_path / f"every{every}" / "metrics.json").read_text()), events, trainer.field.encoding.grid)
    (m1, e1, g1), (m4, e4, g4) = runs[1], runs[4]
    assert m1["loss"] == m4["loss"] and m1["step"] == m4["step"] == list(range(12)) and torch.equal(g1, g4)
    losses = [e["loss"] for e in e4 if e["type"] == "progress"]
    assert math.isnan(losses[0]) and losses[3] == m4["loss"][3] and losses[4] == m4["loss"][3]  # read at steps 4, 8, ...
    assert [e["loss"] for e in e1 if e["type"] == "progress"] == m1["loss"]


def test_non_finite_steps_are_skipped_on_the_device_when_read_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr("backend.trainer.MAX_BAD_STEPS", 3)
    trainer = Trainer(tiny_config(steps=20, preview_every=0, checkpoint_every=0, extra={"read_every": 4}), tmp_path / "run")
    trainer.setup(False)
    poison(trainer, {1} | set(range(5, 100)))
    with pytest.raises(TrainingError, match="3 steps in a row had a non-finite loss") as info:
        trainer.loop(0)
    trainer.close()
    assert info.value.code == "non_finite" and trainer.metrics["skipped_steps"][:4] == [1, 5, 6, 7]
    assert torch.isfinite(trainer.field.encoding.grid).all()
    assert trainer.optimizer.state[trainer.field.encoding.grid]["step"] == 4  # steps 0, 2, 3, 4: Adam never counted a skipped one


def test_non_finite_guidance_values_are_counted_before_they_are_hidden(tmp_path):
    events = []
    trainer = Trainer(tiny_config(steps=4), tmp_path / "run", on_event=events.append)
    trainer.setup(False)
    eps_hat = trainer.guidance.eps_hat

    values = []

    def overflowing(x_t, alpha_bar, view, *rest):  # 3 % of the guidance's values overflow at step 2
        out = eps_hat(x_t, alpha_bar, view, *rest)
        if trainer.last_step == 2:
            values.append(out.numel())  # 16 x 16 x 3, twice: the render over its background and over 1 - b
            out.view(-1)[: out.numel() * 3 // 100] = float("inf")
        return out

    trainer.guidance.eps_hat = overflowing
    trainer.loop(0)
    trainer.close()
    (entry,) = trainer.metrics["guidance_non_finite"]
    assert values == [16 * 16 * 3 * 2]
    assert entry == {"step": 2, "count": values[0] * 3 // 100, "share": round((values[0] * 3 // 100) / values[0], 6)}
    assert 2 not in trainer.metrics["skipped_steps"]  # set to 0 and trained on, as before, but no longer unseen
    warnings = [e for e in events if e["type"] == "log" and e["level"] == "warning"]
    assert len(warnings) == 1 and "step 2: 3.0% of the guidance's values were NaN or inf" in warnings[0]["message"]
