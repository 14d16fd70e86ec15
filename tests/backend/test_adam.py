"""backend/adam.py: FieldAdam updates as torch.optim.Adam does, to the bit; checkpoints cross between them;
a step is skipped on the device; no torch._dynamo import."""

import subprocess
import sys

import pytest
import torch

from backend.adam import FieldAdam

SETTINGS = dict(betas=(0.9, 0.99), eps=1e-15)


def parameters(seed: int = 0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(2, 4, 6, 6, 6, generator=generator)), torch.nn.Parameter(torch.randn(8, generator=generator))]


def gradients(step: int, params) -> None:
    generator = torch.Generator().manual_seed(100 + step)
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator) * (step + 1)


def groups(params, lrs=(0.05, 0.01)):
    return [{"params": [param], "lr": lr} for param, lr in zip(params, lrs)]


@pytest.mark.parametrize("fused", [True, False])
def test_the_same_updates_as_torch_adam(fused):
    ours, theirs = parameters(), parameters()
    mine = FieldAdam(groups(ours), fused=fused, **SETTINGS)
    reference = torch.optim.Adam(groups(theirs), fused=fused, **SETTINGS)
    for step in range(5):
        for optimizer, params in ((mine, ours), (reference, theirs)):
            gradients(step, params)
            optimizer.param_groups[0]["lr"] = 0.05 / (step + 1)  # the trainer sets each step's rate
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    assert all(p.grad is None for p in ours)


@pytest.mark.parametrize("first, then", [(FieldAdam, torch.optim.Adam), (torch.optim.Adam, FieldAdam)])
def test_a_state_dict_loads_into_the_other(first, then):
    source_params, target_params, reference_params = parameters(), parameters(), parameters()
    source = first(groups(source_params), fused=True, **SETTINGS)
    reference = torch.optim.Adam(groups(reference_params), fused=True, **SETTINGS)
    for step in range(3):
        for optimizer, params in ((source, source_params), (reference, reference_params)):
            gradients(step, params)
            optimizer.step()
    with torch.no_grad():
        for param, trained in zip(target_params, source_params):
            param.copy_(trained)
    target = then(groups(target_params, lrs=(1.0, 1.0)), fused=True, **SETTINGS)
    target.load_state_dict(source.state_dict())
    assert target.param_groups[0]["lr"] == 0.05  # the rate saved, not the one it was made with
    for optimizer, params in ((target, target_params), (reference, reference_params)):
        gradients(3, params)
        optimizer.step()
    for a, b in zip(target_params, reference_params):
        assert torch.equal(a, b)  # step count and moments came across: the fourth step is the same


def test_a_state_dict_of_other_groups_is_refused():
    saved = FieldAdam(groups(parameters()), **SETTINGS).state_dict()
    with pytest.raises(ValueError, match="other parameter groups"):
        FieldAdam([{"params": parameters(), "lr": 0.1}], **SETTINGS).load_state_dict(saved)


def test_found_inf_skips_the_step_on_the_device():
    params = parameters()
    optimizer = FieldAdam(groups(params), fused=True, **SETTINGS)
    gradients(0, params)
    optimizer.step(found_inf=torch.zeros(()))
    before = [p.detach().clone() for p in params] + [t.clone() for s in optimizer.state.values() for t in s.values()]
    gradients(1, params)
    optimizer.step(found_inf=torch.ones(()))
    after = list(params) + [t for s in optimizer.state.values() for t in s.values()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # parameters, moments and step count as they were
    optimizer.step(found_inf=torch.zeros(()))
    assert not torch.equal(params[0], before[0])


def test_training_does_not_import_dynamo():
    """torch.optim's wrappers import torch._dynamo (1.4 s) at the first optimizer; a run must not."""
    code = ("import sys, torch; from backend.adam import FieldAdam\n"
            "p = torch.nn.Parameter(torch.ones(3)); o = FieldAdam([{'params': [p], 'lr': 0.1}], fused=True)\n"
            "p.grad = torch.ones(3); o.step(found_inf=torch.zeros(())); o.zero_grad(); o.load_state_dict(o.state_dict())\n"
            "sys.exit('torch._dynamo' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
