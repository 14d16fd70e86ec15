"""backend/cluster/variations.py: N seeds one after another, variations.png/json, distinct targets; one done event."""

import json

import pytest
from PIL import Image

from backend.cluster.variations import Variations, summarize
from backend.config import ConfigError, GenerationConfig


def tiny_config(**changes) -> GenerationConfig:  # tests/backend/test_trainer.py's TINY (not importable from this folder)
    tiny = dict(prompt="a red torus", guidance="analytic", device="cpu", steps=12, resolution=16, preview_resolution=16,
                samples_per_ray=16, encoding="dense", dense_resolution=24, mlp_hidden=0, lr=0.05, mesh_resolution=32,
                preview_every=4, checkpoint_every=5)
    return GenerationConfig(**{**tiny, **changes})


def test_variations_run_each_seed_and_report_the_targets_reached(tmp_path):
    events = []
    config = tiny_config(prompt="a red torus or a blue cube", steps=4, preview_every=0, variations=3, seed=5)
    outputs = Variations(config, tmp_path / "v", on_event=events.append, run_id="r").run()
    root = tmp_path / "v"
    assert sorted(p.name for p in root.iterdir()) == ["config.json", "s5", "s6", "s7", "variations.json", "variations.png"]
    index = json.loads((root / "variations.json").read_text())
    assert index["seeds"] == [5, 6, 7] and index["done"] == 3
    reached = [record["quality"]["best_target_name"] for record in index["records"]]
    assert index["distinct_targets"] == len(set(reached)) and sum(index["targets"].values()) == 3
    assert set(reached) <= {"red torus", "blue cube"}
    with Image.open(root / "variations.png") as sheet:
        assert sheet.size == (3 * 160, 160 + 30)
    kinds = [event["type"] for event in events]
    assert kinds.count("done") == 1 and kinds[-1] == "done" and kinds.count("mesh") == 3
    steps = [event["step"] for event in events if event["type"] == "progress"]
    assert steps == list(range(1, 13)) and {event["steps"] for event in events if event["type"] == "progress"} == {12}
    assert [e for e in events if e["type"] == "preview"][-1]["path"].endswith("variations.png")
    assert outputs["distinct_targets"] == index["distinct_targets"] and len(outputs["variations"]) == 3


def test_a_stopped_variations_run_resumes_the_rest(tmp_path):
    config = tiny_config(steps=3, preview_every=0, variations=2)
    runner = Variations(config, tmp_path / "v")
    runner.stop.set()
    assert runner.run()["variations"] == []  # stopped before the first: nothing run, still an index
    outputs = Variations(config, tmp_path / "v").run(resume=True)
    assert [record["status"] for record in outputs["variations"]] == ["done", "done"]


def test_summary_counts_only_finished_variations():
    records = [{"status": "done", "quality": {"best_target_name": "red torus"}}, {"status": "failed", "quality": None},
               {"status": "done", "quality": {"best_target_name": "red torus"}},
               {"status": "no_mesh", "quality": {"best_target_name": "blue torus"}}]
    assert summarize(records) == {"variations": 4, "done": 2, "no_mesh": 1, "distinct_targets": 1, "targets": {"red torus": 2}}


def test_a_variation_that_trained_but_has_no_mesh_is_counted_apart(tmp_path):
    config = tiny_config(steps=2, preview_every=0, variations=2, mesh_threshold=1e6)  # nothing is that dense: no surface
    outputs = Variations(config, tmp_path / "v").run()
    assert [record["status"] for record in outputs["variations"]] == ["no_mesh", "no_mesh"]
    assert all(record["mesh"] is None and record["preview"] and "no mesh" in record["label"] for record in outputs["variations"])
    assert outputs["steps_done"] == 4
    assert "0 of 2 variations done, 2 without a mesh" in outputs["summary"]
    index = json.loads((tmp_path / "v" / "variations.json").read_text())
    assert (index["done"], index["no_mesh"]) == (0, 2)


@pytest.mark.parametrize("count", [0, 65, 2.5, True])
def test_variations_outside_1_to_64_name_the_field(count):
    with pytest.raises(ConfigError, match="from 1 to 64") as error:
        tiny_config(variations=count).validate()
    assert error.value.field == "variations"
