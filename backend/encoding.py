"""Positional encodings for the NeRF field (docs/ARCHITECTURE.md §4.3): x in [0, 1]^3 -> features.

`HashGridEncoding` is the multiresolution hash encoding of Instant-NGP (Müller et al., "Instant
Neural Graphics Primitives with a Multiresolution Hash Encoding", SIGGRAPH 2022, Sec. 3) in pure
PyTorch; `TcnnHashGridEncoding` is the same encoding from tiny-cuda-nn's fused CUDA kernels, with
the same parameter layout, so a table can be copied from one to the other (`hashgrid_state_for`
turns a checkpoint's field state of one into the other's). `DenseGridEncoding` is a plain
trilinear voxel grid, much cheaper on CPU. `make_encoding` picks one from the config.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch

from .grid_lookup import grid_lookup

ENCODING_KINDS = ("hashgrid", "dense")
IMPLEMENTATIONS = ("auto", "torch", "tcnn")
TCNN_INSTALL = (
    "tinycudann is not importable; install it (needs CUDA and a compiler) with "
    "pip install git+https://github.com/NVlabs/tiny-cuda-nn#subdirectory=bindings/torch"
)

# What was checked against tiny-cuda-nn (NVlabs/tiny-cuda-nn at 6ee3546, 2026-04; the older
# grid.h at 03a659d agrees on every point): include/tiny-cuda-nn/common_device.h `grid_scale`,
# `grid_resolution`, `pos_fract`, `grid_index`, `coherent_prime_hash`; encodings/grid.h
# `GridEncodingTemplated` (table sizes, offsets, init) and `kernel_grid` (corner order, weights).
# - scale_l = exp2f(l * log2f(per_level_scale)) * base_resolution - 1, all in float32;
#   resolution_l = ceil(scale_l) + 1 (grid vertices per side).
# - pos = fmaf(scale_l, x, 0.5f); pos_grid = floor(pos); frac = pos - pos_grid ("Linear").
# - level table size = min(next_multiple(resolution^3, 8), 2^log2_hashmap_size); levels are
#   stacked in one table at running offsets, entry (offset_l + i) holds F features contiguously.
# - index: dense x + y*res + z*res^2 when resolution^3 <= table size, else the default
#   "CoherentPrime" hash (x*1) ^ (y*2654435761) ^ (z*805459861) in uint32; then % table size.
#   The dense index wraps past the table at the x = 1 faces; tcnn does the same (it says so).
# - corner c = b0 + 2*b1 + 4*b2 (bit d set: +1 along axis d), weight prod_d (frac_d or 1-frac_d).
# - output is level-major: features [l0f0, l0f1, l1f0, ...]; init uniform(-1e-4, 1e-4).
TCNN_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
CPU_CHUNK = 2**14  # points per block when computing corners on CPU
# The hash grid's shape (Instant-NGP's NeRF configuration): 16 levels of 2 features, 2^19 rows a level,
# from 16 to 4096 vertices per side.
N_LEVELS, N_FEATURES_PER_LEVEL, LOG2_HASHMAP_SIZE, BASE_RESOLUTION, PER_LEVEL_SCALE = 16, 2, 19, 16, 1.447269237440378
PRIMES = (1, 2654435761, 805459861)


def level_layout(n_levels, log2_hashmap_size, base_resolution, per_level_scale):
    """Per level: (scale, resolution, table size, offset, hashed), computed as tcnn does."""
    log2_scale = np.log2(np.float32(per_level_scale))
    levels, offset = [], 0
    for level in range(n_levels):
        scale = np.exp2(np.float32(level) * log2_scale) * np.float32(base_resolution) - np.float32(1)
        resolution = math.ceil(scale) + 1
        size = min(-(-resolution**3 // 8) * 8, 2**log2_hashmap_size)
        levels.append((float(scale), resolution, size, offset, resolution**3 > size))
        offset += size
    return levels


def _over_corners(per_axis, combine):
    """(..., 3, 2) per-axis terms -> (..., 8) over the corners c = b0 + 2*b1 + 4*b2 (tcnn's order)."""
    a0, a1, a2 = per_axis.unbind(-2)  # (..., 2) each: lower, upper vertex along that axis
    pairs = combine(a0[..., None, None, :], a1[..., None, :, None])  # (..., 1, 2, 2)
    return combine(pairs, a2[..., :, None, None]).flatten(-3)  # (..., 8)


def hashgrid_table_values(n_levels=N_LEVELS, n_features_per_level=N_FEATURES_PER_LEVEL, log2_hashmap_size=LOG2_HASHMAP_SIZE,
                          base_resolution=BASE_RESOLUTION, per_level_scale=PER_LEVEL_SCALE) -> int:
    """How many numbers the hash grid's table holds, without allocating it."""
    levels = level_layout(n_levels, log2_hashmap_size, base_resolution, per_level_scale)
    return sum(size for _, _, size, _, _ in levels) * n_features_per_level


class _GatherRows(torch.autograd.Function):
    """source[index] for a 1-D source, whose backward is scatter_add_: on CPU about twice as
    fast as the index_add_ that index_select's own backward runs."""

    @staticmethod
    def forward(ctx, source, index):
        ctx.save_for_backward(index)
        ctx.n_source = source.shape[0]
        return source.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.n_source).scatter_add_(0, index, grad), None


class HashGridEncoding(torch.nn.Module):
    """Multiresolution hash encoding, pure PyTorch (Müller et al. 2022, Eq. 3 and Sec. 3).

    Per level: the 8 corners of the voxel around x are looked up in the level's table (directly
    when the grid fits, else through the spatial hash) and trilinearly interpolated.
    """

    def __init__(
        self,
        n_levels: int = N_LEVELS,
        n_features_per_level: int = N_FEATURES_PER_LEVEL,
        log2_hashmap_size: int = LOG2_HASHMAP_SIZE,
        base_resolution: int = BASE_RESOLUTION,
        per_level_scale: float = PER_LEVEL_SCALE,
    ):
        super().__init__()
        self.n_levels = n_levels
        self.n_features_per_level = n_features_per_level
        self.n_output_dims = n_levels * n_features_per_level
        self.levels = level_layout(n_levels, log2_hashmap_size, base_resolution, per_level_scale)
        # Resolution grows with the level, so the dense levels come first and the hashed ones after.
        self.n_dense_levels = sum(not hashed for *_, hashed in self.levels)
        n_entries = sum(size for _, _, size, _, _ in self.levels)
        # (T, F): one table for all levels, in tcnn's order (`.reshape(-1)` is tcnn's `params`).
        self.embeddings = torch.nn.Parameter(
            torch.empty(n_entries, n_features_per_level).uniform_(-1e-4, 1e-4)
        )
        self._constant_cache: dict[tuple, dict[str, torch.Tensor]] = {}  # per device: see _constants

    def _corners(self, x, levels, hashed):
        """Table rows and trilinear weights of the 8 corners, for a group of levels.

        Index terms and weights are computed per axis, (N, L, 3, 2), and combined over the
        8 corners by broadcasting: XOR for the hash, sum for dense indexing, product for weights.
        """
        device = x.device
        const = self._constants(levels, hashed, device, x.dtype)
        size, offset = const["size"], const["offset"]  # (L, 1, 1) each
        if exact_positions(device):
            # fmaf rounds once: form x * scale + 0.5 in float64, then round to the working dtype.
            pos = (x.double()[:, None, :] * const["scale"][:, None] + 0.5).to(x.dtype)  # (N, L, 3)
        else:  # Apple GPUs have no float64: two roundings, which differ from tcnn's only at cell borders
            pos = x[:, None, :] * const["scale"][:, None] + 0.5  # (N, L, 3)
        pos_grid = pos.floor()  # (N, L, 3)
        frac = pos - pos_grid  # (N, L, 3)
        corner = pos_grid.long()[..., None] + const["two"]  # (N, L, 3, 2)
        if hashed:
            # Hashed tables hold 2^k rows, k <= 32, and XOR works bit by bit: "uint32 hash % size"
            # is the XOR of each term & (size - 1).
            term = (corner * const["primes"]) & (size - 1)  # (N, L, 3, 2)
            index = _over_corners(term, operator.xor) + offset[..., 0]  # (N, L, 8)
        else:
            # The level's offset rides on the x term, so the sum over corners already includes it.
            term = corner * const["stride"] + const["x_axis"] * offset
            index = _over_corners(term, operator.add)  # (N, L, 8)
            # Corners reach `resolution` on the x = 1 faces, so index - offset < 2 * size: wrap once.
            end = (offset + size)[..., 0]  # (L, 1)
            index = torch.where(index >= end, index - size[..., 0], index)
        weight = torch.stack([1 - frac, frac], dim=-1)  # (N, L, 3, 2)
        return index, _over_corners(weight, operator.mul)  # (N, L, 8), (N, L, 8)

    def _constants(self, levels, hashed, device, dtype) -> dict[str, torch.Tensor]:
        """The per-level numbers _corners needs, as tensors on `device`, made once per device: building
        them from Python lists at every call would copy them to a GPU, and wait for it, each time."""
        key = (hashed, str(device), dtype)
        cache = self._constant_cache
        if key not in cache:
            scale_dtype = torch.float64 if exact_positions(device) else dtype
            res = torch.tensor([lv[1] for lv in levels], device=device)[:, None]  # (L, 1)
            cache[key] = {
                "scale": torch.tensor([lv[0] for lv in levels], dtype=scale_dtype, device=device),  # (L,)
                "size": torch.tensor([lv[2] for lv in levels], device=device)[:, None, None],  # (L, 1, 1)
                "offset": torch.tensor([lv[3] for lv in levels], device=device)[:, None, None],  # (L, 1, 1)
                "two": torch.arange(2, device=device),  # (2,)
                "primes": torch.tensor(PRIMES, device=device)[:, None],  # (3, 1)
                "stride": torch.stack([torch.ones_like(res), res, res * res], dim=1),  # (L, 3, 1)
                "x_axis": torch.tensor([1, 0, 0], device=device)[:, None],  # (3, 1)
            }
        return cache[key]

    def _interpolate(self, index, weight):
        """sum_c weight_c * table[index_c]: (N, L, 8) rows and weights -> (N, L, F) features."""
        n, n_levels, f = index.shape[0], index.shape[1], self.n_features_per_level
        # Gather scalars from a flat view; pairs of features travel as one complex number (the
        # sums are the same), which makes the gather and its scatter-add several times faster
        # (on the CPU and CUDA; MPS's complex support is partial, so there they travel one by one).
        width = 2 if f % 2 == 0 and complex_pairs(index.device) else 1
        flat = self.embeddings.view(-1, width)  # (T * F / width, width)
        flat = torch.view_as_complex(flat) if width == 2 else flat.view(-1)  # (T * F / width,)
        if f > width:
            index = index[..., None] * (f // width) + torch.arange(f // width, device=index.device)
        feature = _GatherRows.apply(flat, index.reshape(-1))  # (N * L * 8 * F / width,)
        feature = torch.view_as_real(feature) if width == 2 else feature
        return torch.einsum("nlc,nlcf->nlf", weight, feature.view(n, n_levels, 8, f))  # (N, L, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.embeddings.dtype).clamp(0.0, 1.0)  # (N, 3)
        # On CPU the (chunk, L, 8) temporaries stay in cache: about 10% faster than one batch.
        chunks = x.split(CPU_CHUNK) if x.device.type == "cpu" else (x,)
        dense, hashed = self.levels[: self.n_dense_levels], self.levels[self.n_dense_levels :]
        out = []
        for levels, is_hashed in ((dense, False), (hashed, True)):
            if levels:
                index, weight = zip(*(self._corners(c, levels, is_hashed) for c in chunks))
                out.append(self._interpolate(torch.cat(index), torch.cat(weight)))  # (N, L', F)
        return torch.cat(out, dim=1).view(x.shape[0], self.n_output_dims)  # (N, L * F)


def exact_positions(device: torch.device) -> bool:
    """Whether lookups form tcnn's fmaf positions in float64 (every device but Apple's MPS, which has no float64)."""
    return device.type != "mps"


def complex_pairs(device: torch.device) -> bool:
    """Whether feature pairs are gathered as complex numbers (CPU and CUDA; not MPS)."""
    return device.type in ("cpu", "cuda")


class TcnnHashGridEncoding(torch.nn.Module):
    """The same hash encoding from tiny-cuda-nn's fused CUDA kernels (float32 output).

    `encoding.params` is HashGridEncoding's `embeddings.reshape(-1)` (tcnn keeps it in float32 and
    casts it per call). `dtype` is the precision tcnn computes the table's lookups and gradients in:
    float32 by default, as threestudio does (SDS gradients on the table underflow in fp16, and tcnn's
    own default, None, is fp16 wherever the GPU supports it); torch.float16 halves the table's traffic.
    """

    def __init__(
        self,
        n_levels: int = N_LEVELS,
        n_features_per_level: int = N_FEATURES_PER_LEVEL,
        log2_hashmap_size: int = LOG2_HASHMAP_SIZE,
        base_resolution: int = BASE_RESOLUTION,
        per_level_scale: float = PER_LEVEL_SCALE,
        *,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        try:
            import tinycudann
        except ImportError as error:
            raise ImportError(TCNN_INSTALL) from error
        self.n_output_dims = n_levels * n_features_per_level
        config = {
            "otype": "HashGrid",
            "n_levels": n_levels,
            "n_features_per_level": n_features_per_level,
            "log2_hashmap_size": log2_hashmap_size,
            "base_resolution": base_resolution,
            "per_level_scale": per_level_scale,
            "interpolation": "Linear",
        }
        self.encoding = tinycudann.Encoding(n_input_dims=3, encoding_config=config, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding(x.clamp(0.0, 1.0)).float()  # (N, L * F)


class DenseGridEncoding(torch.nn.Module):
    """A learnable R^3 grid of F features, trilinearly interpolated (a DVGO/Plenoxels-style voxel
    grid; Sun et al. 2022). Vertex (i, j, k) sits at x = (i, j, k) / (R - 1).

    Read with grid_sample (align_corners=True, through `grid_lookup`, which spreads it over the CPU
    cores). grid_sample reads a point's last dim as (x, y, z) -> (W, H, D): x[..., 0] moves along
    the last grid axis, so grid[0, :, k, j, i] is the feature at vertex (i, j, k).
    """

    def __init__(self, resolution: int = 96, n_features: int = 8):
        super().__init__()
        self.resolution = resolution
        self.n_output_dims = n_features
        # (1, F, D, H, W) = (1, F, R, R, R)
        self.grid = torch.nn.Parameter(
            torch.empty(1, n_features, resolution, resolution, resolution).uniform_(-1e-4, 1e-4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grid_lookup(self.grid, self._coords(x))  # (N, F)

    def _coords(self, x: torch.Tensor) -> torch.Tensor:
        """Points (N, 3) in [0, 1] as grid_sample's (N, 3) in [-1, 1]."""
        return x.to(self.grid.dtype).clamp(0.0, 1.0) * 2 - 1

    def first_feature(self, x: torch.Tensor) -> torch.Tensor:
        """forward(x)[:, 0] (N,), reading only that channel: where only the density is needed (normals,
        meshes) this is the same value and gradient at ~1/5 of the cost of all F on the CPU (131k random
        points, 96^3 grid, 2 cores: 20 against 108 ms forward and backward; in a shaded CPU-preset step,
        6-13 ms of ~120)."""
        return grid_lookup(self.grid[:, :1], self._coords(x))[:, 0]


def tcnn_available() -> bool:
    """Whether tinycudann imports (it can fail with more than ImportError on a bad CUDA setup)."""
    try:
        import tinycudann  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        return False
    return True


def make_encoding(kind: str, implementation: str = "auto", hashgrid_dtype: str = "fp32", **kwargs) -> torch.nn.Module:
    """The encoding for `kind` ("hashgrid" | "dense"); kwargs go to its constructor.

    For the hash grid, `implementation` "auto" takes tcnn when it imports and CUDA is up, else
    torch; "tcnn" insists on tcnn, in `hashgrid_dtype` ("fp32" | "fp16"; the torch grid is always
    float32). The dense grid has only the torch implementation.
    """
    if implementation not in IMPLEMENTATIONS:
        options = ", ".join(IMPLEMENTATIONS)
        raise ValueError(f"encoding implementation: unknown {implementation!r}; choose one of {options}")
    if kind == "dense":
        if implementation == "tcnn":
            raise ValueError("encoding implementation: 'dense' has no tcnn version; use auto or torch")
        return DenseGridEncoding(**kwargs)
    if kind == "hashgrid":
        if implementation == "auto":
            use_tcnn = tcnn_available() and torch.cuda.is_available()
            implementation = "tcnn" if use_tcnn else "torch"
        if implementation == "tcnn":
            if hashgrid_dtype not in TCNN_DTYPES:
                raise ValueError(f"hashgrid_dtype: must be one of {', '.join(TCNN_DTYPES)}, got {hashgrid_dtype!r}")
            return TcnnHashGridEncoding(**kwargs, dtype=TCNN_DTYPES[hashgrid_dtype])
        return HashGridEncoding(**kwargs)
    raise ValueError(f"encoding: unknown kind {kind!r}; choose one of {', '.join(ENCODING_KINDS)}")


# ---------------------------------------------------------------------- checkpoints across implementations
TORCH_TABLE, TCNN_TABLE = "embeddings", "encoding.params"  # the table's name in each module's state_dict


def hashgrid_state_for(encoding: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """`state` (a state_dict holding a hash grid under `prefix`) with the table renamed and reshaped
    for `encoding`: tcnn's flat `encoding.params` (T * F,) becomes the torch grid's `embeddings`
    (T, F) and back. Both hold the same numbers in the same order (the layout notes above), so a run
    trained with one implementation resumes with the other. Anything else passes through unchanged;
    a table of another size raises ValueError naming both sizes."""
    if isinstance(encoding, HashGridEncoding):
        source, target, shape = prefix + TCNN_TABLE, prefix + TORCH_TABLE, tuple(encoding.embeddings.shape)
    elif isinstance(encoding, TcnnHashGridEncoding):
        source, target, shape = prefix + TORCH_TABLE, prefix + TCNN_TABLE, tuple(encoding.encoding.params.shape)
    else:
        return state
    if source not in state:
        return state
    table = state[source]
    if table.numel() != math.prod(shape):
        raise ValueError(f"the checkpoint's hash table has {table.numel()} values; this field's has {math.prod(shape)} "
                         "(another n_levels, n_features_per_level or log2_hashmap_size)")
    state = {name: value for name, value in state.items() if name != source}
    state[target] = table.reshape(shape).float()
    return state
