"""The one generation config, from the Blender panel (or the CLI) to the trainer (docs/ARCHITECTURE.md §2).

Validated in one place, `GenerationConfig.validate()`: a bad value raises ConfigError naming the
field and what it may be. Saved as `config.json` in the run folder. Standard library (and the numpy
schedule module) only, so the add-on can build and check a config without torch.

The one source of truth for defaults, choices and ranges: the field defaults below, `CHOICES` and
`BOUNDS`, which validate() enforces and the add-on's panel (dreamtime_blender/properties.py) reads
for its own defaults, enum items and slider ranges.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .schedule import M1, M2, NUM_TRAIN_TIMESTEPS, S1, S2, SCHEDULE_KINDS, T_MAX, T_MIN

SCHEDULES = SCHEDULE_KINDS
GUIDANCES = ("auto", "analytic", "sd")
ENCODINGS = ("auto", "hashgrid", "dense")
HASHGRID_IMPLEMENTATIONS = ("auto", "torch", "tcnn")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
HASHGRID_DTYPES = ("fp32", "fp16")
EXPORT_FORMATS = ("glb", "ply", "obj")
BACKGROUNDS = ("random", "white", "black", "learned")
WEIGHT_FILES = ("any", "safetensors")
MAX_TARGETS = 64  # analytic targets given as data: at most this many, each of at most MAX_TARGET_PARTS parts
MAX_TARGET_PARTS = 64
MAX_PROMPT_CHARS = 20_000  # long prompts are fine (SD reads 77 tokens, folder names are cut); this bounds config.json
MAX_SEED = 2**32 - 1
HUB_PREFIX = "hub:"  # a `model` of "hub:ORG/NAME" is a Hugging Face Hub id even where a local folder has that name
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")  # what a `model` hub id looks like
T = NUM_TRAIN_TIMESTEPS
MIN_MESH_FACES, MAX_MESH_FACES = 100, 10_000_000  # fewer than 100 faces hold no recognisable shape
TEXTURE_SIZES = tuple(2**k for k in range(8, 14))  # 256 ... 8192

# The allowed values of each text field that is a choice.
CHOICES: dict[str, tuple[str, ...]] = {
    "schedule": SCHEDULES,
    "guidance": GUIDANCES,
    "encoding": ENCODINGS,
    "hashgrid_implementation": HASHGRID_IMPLEMENTATIONS,
    "hashgrid_dtype": HASHGRID_DTYPES,
    "background": BACKGROUNDS,
    "device": DEVICES,
    "precision": PRECISIONS,
    "weights": WEIGHT_FILES,
}
# (lowest, highest) allowed value of each numeric field; integers where the field is an int.
BOUNDS: dict[str, tuple[float, float]] = {
    "seed": (0, MAX_SEED),
    "steps": (1, 1_000_000),
    "t_min": (1, T - 2),
    "t_max": (2, T - 1),
    "m1": (0, T),
    "m2": (0, T),
    "s1": (1e-6, 10 * T),
    "s2": (1e-6, 10 * T),
    "guidance_scale": (0, 1000),  # or -1: the guidance's own default
    "resolution": (16, 1024),  # and a multiple of 8
    "preview_resolution": (16, 1024),  # and a multiple of 8
    "dense_resolution": (8, 512),
    "mlp_hidden": (0, 1024),
    "blob_density": (0, 15),
    "samples_per_ray": (8, 1024),
    "batch_size": (1, 64),
    "scene_radius": (0.1, 1.0),
    "albedo_warmup": (0, 1),
    "textureless_prob": (0, 1),
    "albedo_prob": (0, 1),
    "lr": (1e-8, 10),
    "lr_mlp": (1e-8, 10),
    "lr_final_ratio": (1e-4, 1),
    "lambda_tv": (0, 1e9),
    "sdf_after": (0, 1),
    "sdf_beta": (1e-4, 0.5),
    "sdf_max_density": (1, 1e5),
    "lambda_eikonal": (0, 1e9),
    "preview_every": (0, 1_000_000),
    "checkpoint_every": (0, 1_000_000),
    "mesh_resolution": (16, 1024),
    "mesh_threshold": (1e-3, 1e6),
    "mesh_smooth": (0, 0.2),
    "mesh_faces": (0, MAX_MESH_FACES),  # 0 (every face) or at least MIN_MESH_FACES
    "texture_size": (TEXTURE_SIZES[0], TEXTURE_SIZES[-1]),  # and a power of two
    "strength": (0.01, 1),  # (0, 1]; at least 1 % of the schedule
    "variations": (1, 64),
}


class ConfigError(ValueError):
    """A config value out of range. `field` names the offending field; `fields` adds the others
    of a rule between fields (m2 <= m1: changing either one fixes it)."""

    def __init__(self, field_name: str, message: str, related: tuple[str, ...] = ()):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.fields = (field_name, *related)


@dataclass
class GenerationConfig:
    # What to make
    prompt: str = ""
    negative_prompt: str = ""  # sd only: pushed away from through classifier-free guidance
    seed: int = 0  # cameras, noise and initialization all derive from it
    steps: int = 5000  # optimization steps N (the CPU preset uses fewer)

    # Timestep schedule (docs/ARCHITECTURE.md §4.1; DreamTime Eq. 7-8)
    schedule: str = "tp"  # tp (DreamTime) | uniform (plain SDS) | linear
    m1: float = M1  # upper end of W_p's flat region
    m2: float = M2  # lower end of W_p's flat region
    s1: float = S1  # width of W_p's Gaussian tail above m1
    s2: float = S2  # width of W_p's Gaussian tail below m2
    t_min: int = T_MIN  # smallest timestep used
    t_max: int = T_MAX  # largest timestep used
    use_w_d: bool = True  # include W_d = sqrt((1-abar)/abar) in W (the paper does)

    # Guidance (docs/ARCHITECTURE.md §4.5, §5)
    guidance: str = "auto"  # analytic | sd | auto (sd with CUDA, else analytic)
    model: str = "stabilityai/stable-diffusion-2-1-base"  # hub id (hub:ID: never a local folder) or local diffusers folder (sd)
    weights: str = "any"  # sd weight files: any (safetensors, else PyTorch pickles) | safetensors (never unpickle)
    targets: str | dict | list = ""  # analytic targets: a JSON file, or its object itself (see targets.py); empty: from the prompt
    guidance_scale: float = -1.0  # CFG scale; negative: the guidance's default (sd 100, analytic 1)
    low_vram: bool = False  # sd: model CPU offload and attention slicing for small cards

    # Beyond one prompt (docs/ARCHITECTURE.md §4.9): start from a shape, seed variations, refine
    init_mesh: str = ""  # a mesh file (.glb/.ply/.obj) the field starts from (init_mesh.py); empty: the centre blob
    strength: float = 1.0  # share of the schedule that runs from the init mesh, SDEdit-style (schedule.start_step)
    variations: int = 1  # runs of seeds seed .. seed+N-1, one after another, and a contact sheet (cluster/variations.py)
    refine_from: str = ""  # a finished run folder continued to `steps` (refine.py); empty: a new run

    # Field and renderer (docs/ARCHITECTURE.md §4.3, §4.4)
    encoding: str = "auto"  # hashgrid | dense (voxel features, fast on CPU) | auto
    hashgrid_implementation: str = "auto"  # tcnn when importable (and CUDA is up), else torch
    hashgrid_dtype: str = "fp32"  # tcnn's hash-table precision: fp32 (SDS gradients underflow in fp16) | fp16 (half the memory)
    dense_resolution: int = 96  # voxels per side of the dense encoding
    mlp_hidden: int = 64  # hidden width of the field's MLP; 0: the encoding stores density and albedo
    blob_density: float = 5.0  # log-density bias at the centre at start (a soft ball to begin from)
    resolution: int = 64  # training render size (pixels per side)
    preview_resolution: int = 128  # evaluation render size for previews and metrics
    samples_per_ray: int = 64  # fixed samples per ray inside the bounding sphere
    scene_radius: float = 0.9  # the object lives inside this sphere; rays are sampled only there
    batch_size: int = 1  # cameras per step
    background: str = "random"  # random colour per step | white | black | learned (network)
    albedo_warmup: float = 0.2  # fraction of steps rendered with albedo only, before shading
    textureless_prob: float = 0.25  # after warm-up: chance of a textureless (white) render
    albedo_prob: float = 0.25  # after warm-up: chance of an unshaded render; rest lambertian
    lr: float = 1e-2  # Adam learning rate of the encoding
    lr_mlp: float = 1e-3  # Adam learning rate of the MLPs
    lr_final_ratio: float = 0.1  # learning rates decay exponentially to this share at the last step
    lambda_tv: float = 0.0  # weight of the voxel grid's total-variation prior (dense encoding)
    sdf_after: float = 1.0  # voxel-grid field (dense, mlp_hidden 0): share of steps after which it is an SDF; 1: never
    sdf_beta: float = 0.015  # SDF density edge width: sigma = sdf_max_density * sigmoid(-s / sdf_beta), world units
    sdf_max_density: float = 300.0  # SDF density deep inside: opaque within one sample
    lambda_eikonal: float = 1000.0  # weight of the eikonal prior |grad s| = 1 once the field is an SDF

    # Run bookkeeping (docs/ARCHITECTURE.md §6)
    preview_every: int = 50  # steps between preview PNGs
    checkpoint_every: int = 200  # steps between checkpoints
    mesh_resolution: int = 256  # marching-cubes grid size per side
    mesh_threshold: float = 25.0  # density of the extracted surface (about half opacity per sample)
    mesh_smooth: float = 0.0  # Gaussian blur of log density before marching cubes (world units)
    mesh_faces: int = 20000  # decimate the mesh to at most this many faces (0: keep every face; the atlas then takes longer)
    texture_size: int = 1024  # side of the baked albedo texture, a power of two from 256 to 8192
    vertex_colors: bool = False  # also store per-vertex colours in the GLB and OBJ (PLY always has them)
    export: tuple[str, ...] = ("glb",)  # mesh formats written at the end (CLI: comma-separated, e.g. glb,ply,obj)
    out: str = "runs"  # folder under which a new run folder is made
    run_dir: str = ""  # write exactly here instead (empty: a new folder under `out`)
    device: str = "auto"  # auto (cuda, else mps, else cpu) | cpu | cuda | mps (Apple GPU)
    precision: str = "auto"  # sd weights: auto (fp16 on a GPU, fp32 on the CPU) | fp32 | fp16 (GPU only) | bf16

    # Extra knobs kept out of the panel
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ validation
    def validate(self) -> "GenerationConfig":
        """Check every field; raise ConfigError naming the first bad one. Returns self."""
        for f in dataclasses.fields(self):  # JSON from a client may hold anything: text and switches first
            kind = {"str": str, "bool": bool}.get(f.type)
            if kind is not None and not isinstance(getattr(self, f.name), kind):
                raise ConfigError(f.name, f"must be {'text' if kind is str else 'true or false'}, got {getattr(self, f.name)!r}")
        if not self.prompt.strip():
            raise ConfigError("prompt", "must not be empty")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            raise ConfigError("prompt", f"is {len(self.prompt)} characters; at most {MAX_PROMPT_CHARS}")
        if "\x00" in self.prompt or "\x00" in self.negative_prompt:
            raise ConfigError("prompt", "must not contain NUL characters")
        if len(self.negative_prompt) > MAX_PROMPT_CHARS:
            raise ConfigError("negative_prompt", f"at most {MAX_PROMPT_CHARS} characters")
        _integer(self, "seed")
        _integer(self, "steps")
        _choice(self, "schedule")
        _integer(self, "t_min")
        _integer(self, "t_max")
        if self.t_min >= self.t_max:
            raise ConfigError("t_min", f"must be < t_max ({self.t_max}), got {self.t_min}", related=("t_max",))
        for name in ("m1", "m2"):
            _number(self, name)
        if self.m2 > self.m1:
            raise ConfigError("m2", f"must be <= m1 ({self.m1:g}), got {self.m2:g}", related=("m1",))
        for name in ("s1", "s2"):
            _number(self, name, "must be > 0 and at most 10000")
        _choice(self, "guidance")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError("model", "must name a hub id or a local folder")
        _choice(self, "weights")
        _targets(self.targets)
        if self.guidance_scale != -1.0:
            _number(self, "guidance_scale", "must be between 0 and 1000 (or -1 for the default)")
        self._validate_start()
        _choice(self, "encoding")
        _choice(self, "hashgrid_implementation")
        _choice(self, "hashgrid_dtype")
        for name in ("resolution", "preview_resolution"):
            _integer(self, name)
            if getattr(self, name) % 8:
                raise ConfigError(name, f"must be a multiple of 8 between 16 and 1024, got {getattr(self, name)}")
        _integer(self, "dense_resolution")
        _integer(self, "mlp_hidden")
        if self.mlp_hidden == 0 and self.encoding != "dense":  # a hash grid's features need the MLP to become density and colour
            raise ConfigError("mlp_hidden", f"0 (no MLP) needs encoding dense, a plain voxel grid; with encoding {self.encoding} "
                              "give the MLP a width, e.g. 64", related=("encoding",))
        _number(self, "blob_density")
        _integer(self, "samples_per_ray")
        _integer(self, "batch_size")
        _number(self, "scene_radius", "must be from 0.1 to 1 (the field's bounding cube is [-1, 1]^3)")
        _choice(self, "background")
        for name in ("albedo_warmup", "textureless_prob", "albedo_prob"):
            _number(self, name)
        if self.textureless_prob + self.albedo_prob > 1:
            raise ConfigError("albedo_prob", "albedo_prob + textureless_prob must be at most 1", related=("textureless_prob",))
        for name in ("lr", "lr_mlp"):
            _number(self, name, "must be > 0 and at most 10")
        _number(self, "lr_final_ratio")
        _number(self, "lambda_tv")
        _number(self, "sdf_after", "must be a share of the steps from 0 to 1 (1: never an SDF)")
        _number(self, "sdf_beta", "must be an edge width from 0.0001 to 0.5 (world units)")
        _number(self, "sdf_max_density")
        _number(self, "lambda_eikonal")
        _integer(self, "preview_every", "must be >= 0 (0: no previews)")
        _integer(self, "checkpoint_every", "must be >= 0 (0: only at the end)")
        _integer(self, "mesh_resolution")
        _number(self, "mesh_threshold")
        _number(self, "mesh_smooth")
        faces = self.mesh_faces
        if not isinstance(faces, int) or isinstance(faces, bool) or not (faces == 0 or MIN_MESH_FACES <= faces <= MAX_MESH_FACES):
            raise ConfigError("mesh_faces", f"must be 0 (keep every face) or from {MIN_MESH_FACES} to {MAX_MESH_FACES}, got {faces!r}")
        if self.texture_size not in TEXTURE_SIZES or isinstance(self.texture_size, bool):
            low, high = TEXTURE_SIZES[0], TEXTURE_SIZES[-1]
            raise ConfigError("texture_size", f"must be a power of two from {low} to {high}, got {self.texture_size!r}")
        if not isinstance(self.export, (list, tuple)) or not self.export or any(fmt not in EXPORT_FORMATS for fmt in self.export):
            raise ConfigError("export", f"must be a non-empty list of {', '.join(EXPORT_FORMATS)}, got {self.export!r}")
        self.export = tuple(self.export)
        _choice(self, "device")
        _choice(self, "precision")
        if not isinstance(self.extra, dict):
            raise ConfigError("extra", "must be a dict")
        return self

    def _validate_start(self) -> None:
        """init_mesh, strength, variations, refine_from: the ranges, and what goes together."""
        _number(self, "strength", "must be in (0, 1]: the share of the schedule that runs (at least 0.01)")
        if self.strength < 1 and not self.init_mesh.strip():
            raise ConfigError("strength", f"below 1 ({self.strength:g}) needs an init_mesh to start from", related=("init_mesh",))
        _integer(self, "variations", "must be an integer from 1 to 64")
        if self.refine_from.strip() and self.variations != 1:
            raise ConfigError("variations", "a refine continues one run: variations must be 1", related=("refine_from",))
        if self.refine_from.strip() and self.init_mesh.strip():
            raise ConfigError("init_mesh", "a refine continues its run's own field: leave init_mesh empty", related=("refine_from",))

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["export"] = list(self.export)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationConfig":
        """Build from a dict (config.json, a protocol request); unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError("config", "must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown config field; known: {', '.join(sorted(known))}")
        data = dict(data)
        if "export" in data:
            if isinstance(data["export"], str):
                data["export"] = tuple(fmt.strip() for fmt in data["export"].split(",") if fmt.strip())
            elif isinstance(data["export"], list):
                data["export"] = tuple(data["export"])
        return cls(**data)

    def replace(self, **changes: Any) -> "GenerationConfig":
        return dataclasses.replace(self, **changes)


# CPU preset: small renders and a dense voxel encoding, so a run takes minutes on 2 cores and
# still gives a clean result; the paper-like defaults above are for CUDA.
CPU_PRESET: dict[str, Any] = {
    "steps": 700,
    "resolution": 64,
    "preview_resolution": 96,
    "samples_per_ray": 64,
    "encoding": "dense",
    "mlp_hidden": 0,  # a plain voxel grid of density and albedo: no MLP to run per sample
    "lr": 0.05,  # voxel values move directly, so they need a larger step than hash-grid features
    "lambda_tv": 10.0,
    "blob_density": 2.0,  # a faint start, easy to carve holes through
    "mesh_resolution": 160,
    "mesh_threshold": 5.0,  # the voxel field's surfaces are soft: its visual surface sits at low density
    "mesh_smooth": 0.025,  # about one voxel of the 96^3 grid: removes speckle handles
    "sdf_after": 0.45,  # the voxel grid becomes a signed distance for the last 55 % of steps: a sharp surface
    "preview_every": 100,
    "checkpoint_every": 175,
}


def preset_for(device: str) -> dict[str, Any]:
    """Default overrides for a resolved device ('cpu', 'cuda' or 'mps': the GPUs take the paper-like defaults)."""
    return dict(CPU_PRESET) if device == "cpu" else {}


def _integer(cfg: GenerationConfig, name: str, message: str = "") -> None:
    low, high = BOUNDS[name]
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(name, f"{message or f'must be an integer from {low} to {high}'}, got {value!r}")


def _number(cfg: GenerationConfig, name: str, message: str = "") -> None:
    low, high = BOUNDS[name]
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(name, f"{message or f'must be a number from {low:g} to {high:g}'}, got {value!r}")


def _targets(value: Any) -> None:
    """A file path, or the targets themselves: {"targets": [...]} or the list (each entry's shapes and
    colours are checked where they are read, backend/guidance/targets.py)."""
    if isinstance(value, str):
        return
    entries = value.get("targets") if isinstance(value, dict) else value
    if not isinstance(entries, list) or not entries or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError("targets", 'must be a JSON file\'s path, or {"targets": [...]} / a list of target objects, none empty')
    if len(entries) > MAX_TARGETS:
        raise ConfigError("targets", f"{len(entries)} targets; at most {MAX_TARGETS}")
    for index, entry in enumerate(entries):
        parts = entry.get("parts")
        if isinstance(parts, list) and len(parts) > MAX_TARGET_PARTS:
            raise ConfigError("targets", f"targets[{index}] has {len(parts)} parts; at most {MAX_TARGET_PARTS}")


def _choice(cfg: GenerationConfig, name: str) -> None:
    options = CHOICES[name]
    value = getattr(cfg, name)
    if value not in options:
        raise ConfigError(name, f"must be one of {', '.join(options)}, got {value!r}")
