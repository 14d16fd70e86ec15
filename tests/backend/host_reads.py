"""HostReads: counts the ops that would make a host wait for a GPU, on the CPU (the lean step's tests, issue 16)."""

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class HostReads(TorchDispatchMode):
    """Counts the ops that make a host wait for the device: reading a value (item, bool, float) and
    data-dependent shapes (nonzero, boolean-mask gathers)."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.masked_scatter"):
            self.ops[name] += 1
        if name == "aten.index" and any(getattr(i, "dtype", None) == torch.bool for i in args[1] if i is not None):
            self.ops["boolean index"] += 1
        return func(*args, **(kwargs or {}))
