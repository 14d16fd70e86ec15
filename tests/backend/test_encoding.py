"""Tests for backend/encoding.py: shapes, gradients, a naive hash-grid reference, trilinear values."""

import math

import numpy as np
import pytest
import torch

from backend.encoding import (
    DenseGridEncoding,
    HashGridEncoding,
    TcnnHashGridEncoding,
    hashgrid_state_for,
    make_encoding,
    tcnn_available,
)

# Level 0: scale 3, 4^3 = 64 vertices fit the 2^6 table (dense). Level 1: scale 7, 8^3 > 2^6 (hashed).
TINY = dict(n_levels=2, n_features_per_level=2, log2_hashmap_size=6, base_resolution=4, per_level_scale=2.0)
DEFAULT = dict(
    n_levels=16, n_features_per_level=2, log2_hashmap_size=19, base_resolution=16, per_level_scale=1.447269237440378
)
PRIMES = (1, 2654435761, 805459861)


def reference_hashgrid(table, x, n_levels, n_features_per_level, log2_hashmap_size, base_resolution, per_level_scale):
    """Instant-NGP one point, one level, one corner at a time, in Python ints (tcnn's recipe)."""
    table = table.detach().double().numpy()
    out = np.zeros((len(x), n_levels * n_features_per_level))
    offset = 0
    for level in range(n_levels):
        f32 = np.float32
        scale = np.exp2(f32(level) * np.log2(f32(per_level_scale))) * f32(base_resolution) - f32(1)
        resolution = math.ceil(scale) + 1
        size = min(math.ceil(resolution**3 / 8) * 8, 2**log2_hashmap_size)
        for n, point in enumerate(x.tolist()):
            # fmaf(scale, x, 0.5f): exact product and sum in float64, one rounding to float32.
            pos = [float(f32(float(scale) * float(f32(min(max(p, 0.0), 1.0))) + 0.5)) for p in point]
            cell = [math.floor(p) for p in pos]
            frac = [p - c for p, c in zip(pos, cell)]
            for corner in range(8):
                bits = [(corner >> d) & 1 for d in range(3)]
                vertex = [c + b for c, b in zip(cell, bits)]
                weight = math.prod(f if b else 1 - f for f, b in zip(frac, bits))
                if resolution**3 <= size:
                    index = vertex[0] + vertex[1] * resolution + vertex[2] * resolution**2
                else:
                    index = (vertex[0] * PRIMES[0]) ^ (vertex[1] * PRIMES[1]) ^ (vertex[2] * PRIMES[2])
                    index &= 0xFFFFFFFF  # uint32 arithmetic
                row = offset + index % size
                columns = slice(level * n_features_per_level, (level + 1) * n_features_per_level)
                out[n, columns] += weight * table[row]
        offset += size
    assert offset == table.shape[0]
    return torch.from_numpy(out)


def edge_and_random_points(n, seed=0):
    corners = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.25, 1.0, 0.0]])
    return torch.cat([corners, torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))])


def test_hashgrid_shape_and_dtype():
    encoding = HashGridEncoding()
    y = encoding(torch.rand(100, 3))
    assert encoding.n_output_dims == 32
    assert y.shape == (100, 32) and y.dtype == torch.float32
    assert encoding(torch.empty(0, 3)).shape == (0, 32)
    assert encoding.embeddings.abs().max() <= 1e-4


def test_dense_shape_and_dtype():
    encoding = DenseGridEncoding()
    y = encoding(torch.rand(100, 3))
    assert encoding.n_output_dims == 8
    assert y.shape == (100, 8) and y.dtype == torch.float32
    assert encoding(torch.empty(0, 3)).shape == (0, 8)


@pytest.mark.parametrize("encoding", [HashGridEncoding(**TINY), DenseGridEncoding(resolution=5, n_features=3)])
def test_inputs_outside_unit_cube_are_clamped(encoding):
    torch.nn.init.uniform_(next(encoding.parameters()), -1.0, 1.0)
    x = torch.tensor([[-5.0, 0.5, 7.0], [1.5, -0.1, 0.2], [1e9, -1e9, 0.0]])
    torch.testing.assert_close(encoding(x), encoding(x.clamp(0.0, 1.0)), rtol=0, atol=0)


@pytest.mark.parametrize(
    "config",
    [
        TINY,
        dict(n_levels=4, n_features_per_level=1, log2_hashmap_size=10, base_resolution=5, per_level_scale=1.7),
        dict(n_levels=3, n_features_per_level=4, log2_hashmap_size=9, base_resolution=3, per_level_scale=3.1),
        {},  # the default: 5 dense levels, then 11 hashed ones up to 4096^3 vertices
    ],
)
def test_hashgrid_matches_naive_reference(config):
    encoding = HashGridEncoding(**config)
    torch.nn.init.uniform_(encoding.embeddings, -1.0, 1.0)
    hashed = [is_hashed for *_, is_hashed in encoding.levels]
    assert not hashed[0] and any(hashed)
    x = edge_and_random_points(12)
    expected = reference_hashgrid(encoding.embeddings, x, **{**DEFAULT, **config})
    torch.testing.assert_close(encoding(x).double(), expected, rtol=0, atol=1e-6)


def test_hashgrid_gradcheck():
    encoding = HashGridEncoding(**TINY).double()
    torch.nn.init.uniform_(encoding.embeddings, -1.0, 1.0)
    x = torch.rand(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def by_table(table):
        return torch.func.functional_call(encoding, {"embeddings": table}, (x,))

    table = encoding.embeddings.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(by_table, (table,))
    # Positions too (normals come from d features / d x); random points sit away from cell faces.
    assert torch.autograd.gradcheck(encoding, (x.clone().requires_grad_(),))
    assert encoding(x).dtype == torch.float64


def test_dense_gradcheck():
    encoding = DenseGridEncoding(resolution=4, n_features=2).double()
    torch.nn.init.uniform_(encoding.grid, -1.0, 1.0)
    x = torch.rand(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def by_grid(grid):
        return torch.func.functional_call(encoding, {"grid": grid}, (x,))

    assert torch.autograd.gradcheck(by_grid, (encoding.grid.detach().clone().requires_grad_(),))
    assert torch.autograd.gradcheck(encoding, (x.clone().requires_grad_(),))


def test_dense_matches_hand_trilinear():
    resolution = 5
    encoding = DenseGridEncoding(resolution=resolution, n_features=3)
    torch.nn.init.uniform_(encoding.grid, -1.0, 1.0)
    grid = encoding.grid.detach()[0]  # (F, D, H, W): vertex (i, j, k) is grid[:, k, j, i]
    x = torch.tensor([[0.1, 0.6, 0.35], [0.0, 1.0, 0.5], [0.9, 0.05, 0.77], [1.0, 1.0, 1.0]])
    for point, features in zip(x, encoding(x).detach()):
        pos = point * (resolution - 1)
        cell = pos.floor().long().clamp(max=resolution - 2)
        frac = pos - cell
        expected = torch.zeros(3)
        for bits in np.ndindex(2, 2, 2):
            weight = math.prod(float(f if b else 1 - f) for f, b in zip(frac, bits))
            i, j, k = (int(c) + b for c, b in zip(cell, bits))
            expected += weight * grid[:, k, j, i]
        torch.testing.assert_close(features, expected, rtol=0, atol=1e-6)


def test_dense_reproduces_a_linear_field():
    # Trilinear interpolation is exact on a field linear in (i, j, k); this pins the axis order.
    resolution = 6
    encoding = DenseGridEncoding(resolution=resolution, n_features=1)
    k, j, i = torch.meshgrid(*[torch.arange(resolution, dtype=torch.float32)] * 3, indexing="ij")
    with torch.no_grad():
        encoding.grid[0, 0] = 1.0 * i + 10.0 * j + 100.0 * k
    x = torch.rand(5001, 3)  # enough points for grid_lookup to split them over the threads
    expected = (x * (resolution - 1)) @ torch.tensor([1.0, 10.0, 100.0])
    torch.testing.assert_close(encoding(x)[:, 0], expected, rtol=1e-5, atol=1e-4)


def _lipschitz_steps(encoding, scales, width):
    """Walk a fine line through many cell faces; each step may change level l's features by at most
    scale_l * 2 max|table| * |step|_1 (trilinear interpolation is Lipschitz, also across cells)."""
    t = torch.linspace(0.3, 0.302, 4001)[:, None]
    x = torch.tensor([0.2, 0.5, 0.7]) + t * torch.tensor([1.0, 0.7, -0.3])  # (S, 3)
    y = encoding(x).detach().double()  # (S, L * width)
    step = (x[1:] - x[:-1]).abs().sum(dim=1, keepdim=True).double()  # (S - 1, 1)
    bound = torch.tensor(scales, dtype=torch.float64).repeat_interleave(width) * 2 * step
    assert ((y[1:] - y[:-1]).abs() <= bound * (1 + 1e-3) + 1e-6).all()


def test_hashgrid_is_continuous():
    encoding = HashGridEncoding()
    torch.nn.init.uniform_(encoding.embeddings, -1.0, 1.0)
    _lipschitz_steps(encoding, [scale for scale, *_ in encoding.levels], width=2)


def test_dense_is_continuous():
    encoding = DenseGridEncoding(resolution=96, n_features=2)
    torch.nn.init.uniform_(encoding.grid, -1.0, 1.0)
    _lipschitz_steps(encoding, [95.0], width=2)


def test_tcnn_matches_torch():
    pytest.importorskip("tinycudann")
    if not torch.cuda.is_available():
        pytest.skip("tinycudann needs CUDA")
    reference = HashGridEncoding().cuda()
    torch.nn.init.uniform_(reference.embeddings, -1.0, 1.0)
    fused = TcnnHashGridEncoding(dtype=torch.float32).cuda()
    assert fused.encoding.params.numel() == reference.embeddings.numel()
    with torch.no_grad():
        fused.encoding.params.copy_(reference.embeddings.reshape(-1))
    x = torch.rand(20000, 3, device="cuda")
    y, y_ref = fused(x), reference(x)
    assert y.dtype == torch.float32 and y.shape == y_ref.shape
    # CUDA exp2f may put scale_l one float32 ulp off numpy's: at 4095 that moves pos by ~2e-4.
    torch.testing.assert_close(y, y_ref, rtol=0, atol=2e-3)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    torch.testing.assert_close(fused.encoding.params.grad, reference.embeddings.grad.reshape(-1), rtol=0, atol=1e-2)


def test_make_encoding():
    assert isinstance(make_encoding("dense", resolution=8, n_features=4), DenseGridEncoding)
    assert isinstance(make_encoding("hashgrid", "torch", **TINY), HashGridEncoding)
    auto = make_encoding("hashgrid", **TINY)
    expected = TcnnHashGridEncoding if tcnn_available() and torch.cuda.is_available() else HashGridEncoding
    assert isinstance(auto, expected)
    with pytest.raises(ValueError, match="hashgrid, dense"):
        make_encoding("triplane")
    with pytest.raises(ValueError, match="auto, torch, tcnn"):
        make_encoding("hashgrid", "cuda")
    with pytest.raises(ValueError, match="no tcnn"):
        make_encoding("dense", "tcnn")


def test_tcnn_missing_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tinycudann", None)
    assert not tcnn_available()
    with pytest.raises(ImportError, match="pip install git\\+https://github.com/NVlabs/tiny-cuda-nn"):
        make_encoding("hashgrid", "tcnn")
    with pytest.raises(ImportError, match="tinycudann"):
        TcnnHashGridEncoding()


def test_tcnn_hash_table_is_fp32_unless_asked_for_half(fake_tcnn):
    """tinycudann's own default (dtype None) is fp16 where the GPU has it: SDS gradients on the table underflow there."""
    make_encoding("hashgrid", "tcnn", **TINY)
    make_encoding("hashgrid", "tcnn", "fp16", **TINY)
    assert [encoding.dtype for encoding in fake_tcnn.instances] == [torch.float32, torch.float16]
    assert TcnnHashGridEncoding(**TINY).encoding.dtype == torch.float32
    with pytest.raises(ValueError, match="hashgrid_dtype: must be one of fp32, fp16"):
        make_encoding("hashgrid", "tcnn", "bf16", **TINY)


@pytest.mark.parametrize("config", [TINY, {}])
def test_a_table_in_tcnn_layout_loads_into_the_torch_grid_and_back(fake_tcnn, config):
    fused = TcnnHashGridEncoding(**config)
    torch.nn.init.uniform_(fused.encoding.params, -1.0, 1.0)
    state = {"encoding.encoding.params": fused.encoding.params.detach().clone(), "mlp.0.weight": torch.ones(2)}
    torch_grid = HashGridEncoding(**config)
    moved = hashgrid_state_for(torch_grid, state, prefix="encoding.")
    assert set(moved) == {"encoding.embeddings", "mlp.0.weight"} and moved["mlp.0.weight"] is state["mlp.0.weight"]
    torch_grid.load_state_dict({"embeddings": moved["encoding.embeddings"]})
    x = edge_and_random_points(50)
    torch.testing.assert_close(torch_grid(x), fused(x), rtol=0, atol=0)  # the same numbers in the same places
    back = hashgrid_state_for(fused, {"encoding.embeddings": torch_grid.embeddings.detach()}, prefix="encoding.")
    assert torch.equal(back["encoding.encoding.params"], state["encoding.encoding.params"])
    assert hashgrid_state_for(torch_grid, moved, prefix="encoding.") is moved  # already in its layout
    with pytest.raises(ValueError, match="hash table has .* values; this field's has"):
        hashgrid_state_for(HashGridEncoding(**{**TINY, "n_levels": 3}), state, prefix="encoding.")


def test_the_mps_path_computes_the_same_grid(monkeypatch):
    """Apple's MPS has no float64 and partial complex support: the lookup the MPS path takes (float32
    positions, features gathered one by one), run here on the CPU, gives the grid's values."""
    encoding = HashGridEncoding()
    torch.nn.init.uniform_(encoding.embeddings, -1.0, 1.0)
    x = torch.rand(3000, 3, generator=torch.Generator().manual_seed(4))
    exact = encoding(x)
    monkeypatch.setattr("backend.encoding.exact_positions", lambda device: False)
    monkeypatch.setattr("backend.encoding.complex_pairs", lambda device: False)
    encoding._constant_cache.clear()
    approximate = encoding(x)
    # One float32 rounding more moves pos by up to an ulp, ~2.4e-4 at the finest level's scale 4095 (as CUDA's exp2f does).
    torch.testing.assert_close(approximate, exact, rtol=0, atol=2e-3)
    assert encoding._constant_cache and all(c["scale"].dtype == torch.float32 for c in encoding._constant_cache.values())
