"""backend/step_random.py: the generators of a step, seeded by (seed, step)."""

import torch

from backend.step_random import SEED_STRIDE, normal, step_random, uniform


def test_one_stream_on_the_cpu_drawn_as_before():
    rng = step_random(3, 7)
    assert rng.host is rng.device  # the CPU draws in the order steps always drew: CPU runs stay as they were
    expected = torch.Generator().manual_seed(3 * SEED_STRIDE + 7)
    assert torch.equal(uniform((4,), rng.device), torch.rand(4, generator=expected))
    assert torch.equal(normal((2, 3), rng.host), torch.randn(2, 3, generator=expected))


def test_the_same_step_draws_the_same_numbers_and_another_step_others():
    first, again, other = (uniform((5,), step_random(0, step).device) for step in (4, 4, 5))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert uniform((3,), step_random(0, 4, "cpu").device).device.type == "cpu"
