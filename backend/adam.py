"""The field's Adam (Kingma & Ba 2015, Algorithm 1): torch's own Adam, without torch.optim's wrappers.

`FieldAdam` keeps Adam's state per parameter (step, first and second moments) and updates through
torch's functional `torch.optim.adam.adam`, the very code `torch.optim.Adam.step` runs (the fused
kernel where `fused`), so the numbers are the same to the bit (tests/backend/test_adam.py). What it
leaves out is torch.optim.Optimizer's dynamo plumbing: `add_param_group`, `zero_grad`, `step` and
`state_dict` there import torch._dynamo on first use, 1.4 s of every process's first run on a
2-core CPU (a tenth of a strength-0.4 run from a shape), for a compiler this project does not use.

Its `state_dict()` is torch.optim.Adam's format, and `load_state_dict` reads that format, so a
checkpoint written by either loads into the other. `step(found_inf)`: a 0-d float tensor, 1 for a
step to skip, read on the device by the fused kernel (no host sync); without `fused` the caller
decides on the host.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import torch
from torch.optim.adam import adam

# torch.optim.Adam's hyperparameters, as its state_dict names them (the ones this class does not vary are fixed)
FIXED = {"weight_decay": 0.0, "amsgrad": False, "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
         "decoupled_weight_decay": False}


class FieldAdam:
    def __init__(self, groups: Iterable[dict[str, Any]], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 fused: bool = False):
        """`groups`: dicts with "params" (tensors to optimize) and "lr", as torch.optim takes them."""
        self.defaults = {"betas": betas, "eps": eps, "fused": fused, **FIXED}
        self.param_groups = [{**self.defaults, **group, "params": list(group["params"])} for group in groups]
        self.state: defaultdict[torch.Tensor, dict[str, torch.Tensor]] = defaultdict(dict)  # as torch.optim: {} before a step

    def _moments(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state[param]
        if not state:  # as torch.optim.Adam: the step on the parameter's device when fused, else on the host
            step = torch.zeros((), device=param.device) if self.defaults["fused"] else torch.tensor(0.0)
            state.update(step=step, exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param))
        return state

    @torch.no_grad()
    def step(self, found_inf: torch.Tensor | None = None) -> None:
        """One Adam update of every parameter that has a gradient; with `fused`, none where found_inf is 1."""
        fused = self.defaults["fused"]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._moments(p) for p in params]
            beta1, beta2 = group["betas"]
            adam(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
                 [s["step"] for s in states], foreach=None, fused=fused,
                 found_inf=found_inf if fused else None, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
                 weight_decay=0.0, eps=group["eps"], maximize=False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none:
                    param.grad = None
                elif param.grad is not None:
                    param.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.Adam's format: state by the parameter's index over all groups, the groups with those indices."""
        index = {id(p): i for i, p in enumerate(p for group in self.param_groups for p in group["params"])}
        groups = [{**group, "params": [index[id(p)] for p in group["params"]]} for group in self.param_groups]
        return {"state": {index[id(p)]: dict(state) for p, state in self.state.items() if state}, "param_groups": groups}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """A state_dict of this class or of torch.optim.Adam with the same groups: moments onto each parameter's
        device and dtype, the step where this class keeps it; each group's lr as saved."""
        params = [p for group in self.param_groups for p in group["params"]]
        groups = saved["param_groups"]
        if len(groups) != len(self.param_groups) or any(len(g["params"]) != len(h["params"]) for g, h in zip(groups, self.param_groups)):
            raise ValueError("the saved optimizer state has other parameter groups than this optimizer")
        for group, saved_group in zip(self.param_groups, groups):
            group["lr"] = saved_group.get("lr", group["lr"])
        self.state = defaultdict(dict)
        for i, entry in saved["state"].items():
            param = params[int(i)]
            step = entry["step"].detach().float().reshape(())
            self.state[param] = {"step": step.to(param.device) if self.defaults["fused"] else step.cpu(),
                                 "exp_avg": entry["exp_avg"].to(param.device, param.dtype),
                                 "exp_avg_sq": entry["exp_avg_sq"].to(param.device, param.dtype)}
