"""backend/readback.py: each step's numbers come back once, in step order, in blocks of `every`."""

import torch

from backend.readback import Readback


def test_every_step_at_once_on_the_cpu():
    readback = Readback(torch.device("cpu"))
    assert readback.push(0, torch.tensor([1.5, 1.0, 0.0]), "a") == [(0, "a", [1.5, 1.0, 0.0])]
    assert readback.flush() == []


def test_blocks_of_every_and_the_rest_on_flush():
    readback = Readback(torch.device("cpu"), every=3)
    got = [readback.push(step, torch.tensor([float(step), 1.0]), step * 10) for step in range(7)]
    assert got[:2] == [[], []] and [s for s, _, _ in got[2]] == [0, 1, 2] and got[3:5] == [[], []]
    assert [(s, p, v) for s, p, v in got[5]] == [(3, 30, [3.0, 1.0]), (4, 40, [4.0, 1.0]), (5, 50, [5.0, 1.0])]
    assert readback.flush() == [(6, 60, [6.0, 1.0])] and readback.flush() == []
