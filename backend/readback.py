"""Per-step scalars read back from the device in blocks, so a GPU step never waits for the host.

A training step ends with a few numbers on the device (the loss, whether the step was finite,
how many guidance values were not). Reading one (`float(loss)`) makes the host wait until the GPU
has finished the step, so the next step's work cannot be queued behind it. `Readback` keeps them
on the device and reads `every` steps at once: the block is copied with `non_blocking=True`, and
read one block later, by which time the copy has long finished. On the CPU reading is free, so
`every` is 1 there and each step's numbers come back at once.
"""

from __future__ import annotations

from typing import Any

import torch

READ_EVERY = 10  # steps per block on a GPU: the progress bar's loss lags at most two blocks behind


class Readback:
    """Push each step's (V,) device tensor; get back (step, payload, values) of steps whose copy is done."""

    def __init__(self, device: torch.device, every: int = 1):
        self.device, self.every = torch.device(device), max(1, int(every))
        self._pending: list[tuple[int, Any, torch.Tensor]] = []
        self._in_flight: tuple[list[tuple[int, Any]], torch.Tensor, Any] | None = None

    def push(self, step: int, values: torch.Tensor, payload: Any = None) -> list[tuple[int, Any, list[float]]]:
        """Queue step `step`'s values; returns the steps that can be read now (in step order)."""
        self._pending.append((step, payload, values))
        if len(self._pending) < self.every:
            return []
        ready = self._finish_in_flight()
        self._start_copy()
        if self._in_flight is not None and self._in_flight[2] is None:  # nothing to wait for (the CPU)
            ready += self._finish_in_flight()
        return ready

    def flush(self) -> list[tuple[int, Any, list[float]]]:
        """Everything queued, read now (waits for the device): before a checkpoint, a preview, the end."""
        ready = self._finish_in_flight()
        if self._pending:
            self._start_copy()
            ready += self._finish_in_flight()
        return ready

    def _start_copy(self) -> None:
        keys = [(step, payload) for step, payload, _ in self._pending]
        block = torch.stack([values.detach().float() for _, _, values in self._pending])  # (K, V)
        self._pending = []
        event = None
        if block.device.type == "cuda":
            block = block.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        elif block.device.type != "cpu":  # MPS and others: one blocking copy per block
            block = block.cpu()
        self._in_flight = (keys, block, event)

    def _finish_in_flight(self) -> list[tuple[int, Any, list[float]]]:
        if self._in_flight is None:
            return []
        keys, block, event = self._in_flight
        self._in_flight = None
        if event is not None:
            event.synchronize()  # long done when a block is read one block later
        return [(step, payload, row) for (step, payload), row in zip(keys, block.tolist())]
