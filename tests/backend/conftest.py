"""Fixtures for the backend tests: a stand-in for tiny-cuda-nn, which needs CUDA and cannot be installed here."""

import sys
import types

import pytest
import torch

from backend.encoding import HashGridEncoding


@pytest.fixture(autouse=True)
def no_flush_denormal_after_a_test():
    """A CPU run flushes denormals to zero for its whole process (run_setup.configure_device); tests
    share one process, and hypothesis refuses to draw floats where subnormals cannot exist."""
    yield
    torch.set_flush_denormal(False)


class FakeTcnnEncoding(torch.nn.Module):
    """tinycudann.Encoding as its torch bindings lay it out: one flat float32 Parameter `params` of the
    tables (grid.h's layout, which HashGridEncoding follows), and the dtype it was asked to compute in.
    It computes with the pure-torch grid's math on that flat table, on the CPU."""

    instances: list = []

    def __init__(self, n_input_dims, encoding_config, seed=1337, dtype=None):
        super().__init__()
        assert n_input_dims == 3 and encoding_config["otype"] == "HashGrid"
        keys = ("n_levels", "n_features_per_level", "log2_hashmap_size", "base_resolution", "per_level_scale")
        self._math = [HashGridEncoding(**{key: encoding_config[key] for key in keys})]  # a list: not a submodule
        self.features = encoding_config["n_features_per_level"]
        self.n_output_dims = self._math[0].n_output_dims
        self.dtype = dtype
        self.params = torch.nn.Parameter(torch.empty(self._math[0].embeddings.numel()).uniform_(-1e-4, 1e-4))
        FakeTcnnEncoding.instances.append(self)

    def forward(self, x):
        table = self.params.view(-1, self.features)
        return torch.func.functional_call(self._math[0], {"embeddings": table}, (x,))


@pytest.fixture
def fake_tcnn(monkeypatch):
    """`import tinycudann` gives the stand-in; returns its Encoding class (instances listed in .instances)."""
    module = types.ModuleType("tinycudann")
    module.Encoding = FakeTcnnEncoding
    FakeTcnnEncoding.instances = []
    monkeypatch.setitem(sys.modules, "tinycudann", module)
    return FakeTcnnEncoding
