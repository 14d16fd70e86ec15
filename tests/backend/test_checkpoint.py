"""backend/checkpoint.py: a run trained with tiny-cuda-nn's hash grid resumes with the pure-torch grid, and back.

tinycudann needs CUDA, so the tests use the stand-in of conftest.py: a flat float32 `params` table in
tcnn's layout, as the real bindings keep it."""

import pytest
import torch

from backend.encoding import HashGridEncoding, TcnnHashGridEncoding
from backend.trainer import Trainer

from test_trainer import tiny_config

HASHGRID = dict(encoding="hashgrid", mlp_hidden=8, steps=6, checkpoint_every=3, preview_every=0, mesh_resolution=16, lr=0.01)


def trained(tmp_path, implementation, steps):
    trainer = Trainer(tiny_config(**HASHGRID, hashgrid_implementation=implementation), tmp_path / "run")
    trainer.setup(False)
    for step in range(steps):
        trainer.train_step(step)
    return trainer


@pytest.mark.parametrize("first, then", [("tcnn", "torch"), ("torch", "tcnn")])
def test_a_checkpoint_resumes_with_the_other_hash_grid(tmp_path, fake_tcnn, first, then):
    source = trained(tmp_path, first, 3)
    source._save_checkpoint(3)
    source.close()
    kinds = {"tcnn": TcnnHashGridEncoding, "torch": HashGridEncoding}
    assert isinstance(source.field.encoding, kinds[first])
    resumed = Trainer(tiny_config(**HASHGRID, hashgrid_implementation=then), tmp_path / "run")
    assert resumed.setup(resume=True) == 3
    assert isinstance(resumed.field.encoding, kinds[then])
    points = torch.rand(500, 3, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    with torch.no_grad():
        torch.testing.assert_close(resumed.field.density(points), source.field.density(points), rtol=0, atol=0)
    moments = [resumed.optimizer.state[p]["exp_avg_sq"] for p in resumed.field.encoding_parameters()]
    assert [m.shape for m in moments] == [p.shape for p in resumed.field.encoding_parameters()]
    saved = source.optimizer.state[source.field.encoding_parameters()[0]]["exp_avg_sq"]
    assert torch.equal(moments[0].reshape(-1), saved.reshape(-1))  # Adam's moments of the table moved with it
    for step in range(3, 6):  # and it trains on
        assert resumed.train_step(step) is not None
    resumed.close()
