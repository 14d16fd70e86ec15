"""The analytic prior's objects: coloured primitives named by prompt words, or a JSON object of them.

A target is a union of parts; each part is a primitive (signed distance function) with a colour,
centre, scale and rotation. Prompts name targets: "a red torus" is one target, "a torus" is the
torus in every library colour (K modes), "a red torus or a blue cube" is two (read_prompt says
what else it reads and refuses).

JSON (`--targets FILE`, or the config's `targets` holding the object itself, as a remote client sends it):
    {"targets": [{"name": "cone up", "weight": 1.0,
                  "parts": [{"shape": "cone", "color": "red" | [r, g, b],
                             "center": [x, y, z], "scale": s | [sx, sy, sz],
                             "rotation": [rx, ry, rz],
                             "stripes": {"color": "white" | [r, g, b], "width": w, "axis": "x" | "y" | "z"}}]}]}
(rotation: XYZ Euler, degrees; stripes, optional: bands of `width` across the part's own `axis`, every
other one in the stripes' colour: a colour pattern a single vertex colour per ~voxel cannot hold.)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.50, 0.05),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.10, 0.65, 0.20),
    "blue": (0.10, 0.30, 0.90),
    "purple": (0.55, 0.15, 0.75),
    "white": (0.95, 0.95, 0.95),
    "black": (0.08, 0.08, 0.08),
}

FILLER_WORDS = {"a", "an", "the", "one", "single", "of", "with", "shape", "object", "solid", "colored", "coloured"}
ALTERNATIVES = {"or", ","}  # between objects, each one a mode of the prior ("and" joins colours: read_prompt)
COUNT_WORDS = {"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "several", "many", "some", "pair", "couple",
               "dozen", "few", "multiple", "both"}
SYNONYMS = {"box": "cube", "ball": "sphere", "donut": "torus", "doughnut": "torus", "ring": "torus", "pill": "capsule", "violet": "purple"}


class TargetError(ValueError):
    """A prompt or targets file the analytic prior cannot read."""


# --- signed distance functions, unit-sized, centred at the origin, z up ------------------------
def sdf_sphere(p: torch.Tensor) -> torch.Tensor:
    return p.norm(dim=-1) - 0.5


def sdf_cube(p: torch.Tensor, half: float = 0.4, rounding: float = 0.03) -> torch.Tensor:
    q = p.abs() - (half - rounding)
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0) - rounding


def sdf_torus(p: torch.Tensor, major: float = 0.45, minor: float = 0.18) -> torch.Tensor:
    ring = p[..., :2].norm(dim=-1) - major
    return torch.stack([ring, p[..., 2]], dim=-1).norm(dim=-1) - minor


def sdf_cylinder(p: torch.Tensor, radius: float = 0.4, half_height: float = 0.45) -> torch.Tensor:
    d = torch.stack([p[..., :2].norm(dim=-1) - radius, p[..., 2].abs() - half_height], dim=-1)
    return d.clamp(min=0).norm(dim=-1) + d.max(dim=-1).values.clamp(max=0)


def sdf_capsule(p: torch.Tensor, radius: float = 0.28, half_length: float = 0.3) -> torch.Tensor:
    z = p[..., 2].clamp(-half_length, half_length)
    return torch.stack([p[..., 0], p[..., 1], p[..., 2] - z], dim=-1).norm(dim=-1) - radius


def sdf_cone(p: torch.Tensor, radius: float = 0.45, half_height: float = 0.5) -> torch.Tensor:
    """Solid cone, apex up at z = +h, base disc of `radius` at z = -h (exact 2D SDF in (r, z))."""
    r, z = p[..., :2].norm(dim=-1), p[..., 2]
    # In the (r, z) half-plane the cross-section is the triangle (0,-h), (R,-h), (0,h).
    a = torch.tensor([radius, -half_height], device=p.device)
    b = torch.tensor([0.0, half_height], device=p.device)
    q = torch.stack([r, z], dim=-1)
    edge = b - a
    h = (((q - a) * edge).sum(-1) / (edge * edge).sum()).clamp(0, 1)
    d_side = (q - a - h[..., None] * edge).norm(dim=-1)
    d_base = torch.stack([(r - radius).clamp(min=0), z + half_height], dim=-1).norm(dim=-1)
    d_base = torch.where(r <= radius, (z + half_height).abs(), d_base)
    inside = (z >= -half_height) & (r * 2 * half_height <= radius * (half_height - z))
    distance = torch.minimum(d_side, d_base)
    return torch.where(inside, -distance, distance)


SHAPES = {
    "sphere": sdf_sphere,
    "cube": sdf_cube,
    "torus": sdf_torus,
    "cone": sdf_cone,
    "cylinder": sdf_cylinder,
    "capsule": sdf_capsule,
}


@dataclass
class Part:
    shape: str
    color: tuple[float, float, float]
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)  # XYZ Euler, degrees
    stripes: tuple[tuple[float, float, float], float, int] | None = None  # (colour, width, local axis 0-2)

    def local(self, points: torch.Tensor) -> torch.Tensor:
        """World points (N, 3) in the part's frame (centred, rotated; not scaled)."""
        return (points - torch.tensor(self.center, device=points.device)) @ rotation_matrix(self.rotation).to(points.device)

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """Signed distance (N,) of world points (N, 3); exact for uniform scale, a bound otherwise."""
        scale = torch.tensor(self.scale, device=points.device)
        return SHAPES[self.shape](self.local(points) / scale) * scale.min()

    def albedo(self, points: torch.Tensor) -> torch.Tensor:
        """The part's colour (N, 3) at points (N, 3): its own, or with stripes the stripes' colour on
        every other band of `width` along the local axis (bands [2k w, (2k+1) w) keep the part's own)."""
        color = torch.tensor(self.color, device=points.device).expand(len(points), 3)
        if self.stripes is None:
            return color
        stripe_color, width, axis = self.stripes
        odd = torch.floor(self.local(points)[:, axis] / width).remainder(2) == 1
        return torch.where(odd[:, None], torch.tensor(stripe_color, device=points.device), color)

    @property
    def colors(self) -> set[tuple[float, float, float]]:
        return {self.color} | ({self.stripes[0]} if self.stripes else set())


@dataclass
class Target:
    name: str
    parts: list[Part]
    weight: float = 1.0

    @property
    def single_color(self) -> tuple[float, float, float] | None:
        colors = set().union(*(part.colors for part in self.parts))
        return next(iter(colors)) if len(colors) == 1 else None

    def geometry_key(self) -> tuple:
        """Targets with the same key differ only in one overall colour, so can share one render."""
        if self.single_color is None:
            return (self.name, tuple((p.shape, p.color, p.center, p.scale, p.rotation, p.stripes) for p in self.parts))
        return tuple((p.shape, p.center, p.scale, p.rotation) for p in self.parts)

    def sdf_and_albedo(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Union of the parts: min SDF (N,), and the albedo (N, 3) of the nearest part."""
        distances = torch.stack([part.sdf(points) for part in self.parts], dim=-1)  # (N, P)
        sdf, nearest = distances.min(dim=-1)
        if not any(part.stripes for part in self.parts):
            colors = torch.tensor([part.color for part in self.parts], device=points.device)  # (P, 3)
            return sdf, colors[nearest]
        colors = torch.stack([part.albedo(points) for part in self.parts], dim=1)  # (N, P, 3)
        return sdf, colors[torch.arange(len(points), device=points.device), nearest]


def rotation_matrix(degrees: tuple[float, float, float]) -> torch.Tensor:
    """R = Rz @ Ry @ Rx (XYZ Euler); local = world @ R maps world points into the part's frame."""
    rx, ry, rz = (math.radians(a) for a in degrees)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return (Rz @ Ry @ Rx).float()


# --- prompts and files -----------------------------------------------------------------------
def known_words() -> str:
    return f"shapes: {', '.join(SHAPES)}; colours: {', '.join(COLORS)}"


def targets_from_prompt(prompt: str) -> list[Target]:
    """Read targets from prompt words; raise TargetError saying what it reads otherwise (read_prompt)."""
    return read_prompt(prompt)[0]


def read_prompt(prompt: str) -> tuple[list[Target], list[str]]:
    """The targets a prompt names and notes on how it was read.

    One object per run, in alternatives: "or" and "," separate them (each one a mode of the prior).
    Within an alternative, "and" may join colours of its one shape ("a black and white torus") but
    not objects: "a torus and a cube" is a set, refused. A shape without a colour is that shape in
    every colour; a colour without a shape, every shape in it; several colours for one shape take
    the first (a note says so); several shapes for one object, counts ("two") and plurals
    ("spheres") are refused, each with a message saying what the prior reads.
    """
    words = re.findall(r"[a-z]+|\d+|,", prompt.lower())
    _refuse_counts_and_plurals(prompt, words)
    alternatives, current = [], [[]]
    for word in words:
        if word in ALTERNATIVES:
            alternatives.append(current)
            current = [[]]
        elif word == "and":
            current.append([])
        else:
            current[-1].append(SYNONYMS.get(word, word))
    alternatives.append(current)
    unknown = sorted({w for parts in alternatives for part in parts for w in part} - set(SHAPES) - set(COLORS) - FILLER_WORDS)
    if unknown:
        shown = ", ".join(repr(w[:30]) for w in unknown[:8]) + (f" and {len(unknown) - 8} more words" if len(unknown) > 8 else "")
        raise TargetError(
            f"the analytic (offline demo) prior does not know {shown}. "
            f"It knows only {known_words()}. For free text prompts use Stable Diffusion: [[guidance=sd]]"
        )
    targets: list[Target] = []
    notes: list[str] = []
    for parts in alternatives:
        with_shapes = [part for part in parts if any(w in SHAPES for w in part)]
        if len(with_shapes) > 1:
            named = " and ".join("a " + " ".join(w for w in part if w in SHAPES or w in COLORS) for part in with_shapes)
            raise TargetError(
                f"{named}: the analytic (offline demo) prior makes one object per run, not a set of objects. "
                f"Write {' or '.join('a ' + ' '.join(w for w in part if w in SHAPES or w in COLORS) for part in with_shapes)!r} "
                "for either one, or compose one object of several parts in a targets file ([[targets]])"
            )
        clause = [w for part in parts for w in part]
        shapes = list(dict.fromkeys(w for w in clause if w in SHAPES))
        colors = list(dict.fromkeys(w for w in clause if w in COLORS))
        if len(shapes) > 1:
            raise TargetError(
                f"{' '.join(shapes)}: several shapes for one object. The analytic prior reads one shape per object; "
                f"write {' or '.join('a ' + shape for shape in shapes)!r} for either one"
            )
        if shapes and len(colors) > 1:
            notes.append(f"read {' and '.join(colors)} {shapes[0]} as a {colors[0]} {shapes[0]}: the analytic prior gives an object "
                         "one colour, the first one named")
            colors = colors[:1]
        if not shapes and not colors:
            continue
        for shape in shapes or list(SHAPES):
            for color in colors or list(COLORS):
                name = f"{color} {shape}"
                if all(t.name != name for t in targets):
                    targets.append(Target(name, [Part(shape, COLORS[color])]))
    if not targets:
        raise TargetError(f"the prompt names no shape or colour. The analytic prior knows {known_words()}")
    return targets, notes


def _refuse_counts_and_plurals(prompt: str, words: list[str]) -> None:
    counts = [w for w in words if w.isdigit() or w in COUNT_WORDS]
    plurals = [w for w in words if w not in SHAPES and w not in SYNONYMS and _singular(w) is not None]
    if not counts and not plurals:
        return
    what = [f"{', '.join(map(repr, counts))} {'is a count' if len(counts) == 1 else 'are counts'}"] if counts else []
    what += [f"{', '.join(map(repr, plurals))} {'is a plural' if len(plurals) == 1 else 'are plurals'}"] if plurals else []
    singular = " ".join(SYNONYMS.get(_singular(w) or w, _singular(w) or w) for w in words if w not in counts and w not in FILLER_WORDS)
    raise TargetError(
        f"{prompt.strip()!r}: the analytic (offline demo) prior makes one object per run and reads no counts or plurals "
        f"({'; '.join(what)}). Write one object, e.g. {('a ' + singular).strip()!r}"
    )


def _singular(word: str) -> str | None:
    """The shape (or its synonym) a plural names ("spheres", "boxes", "tori"), else None."""
    for ending, replacement in (("es", ""), ("s", ""), ("i", "us")):
        if word.endswith(ending):
            stem = word[: -len(ending)] + replacement
            if stem in SHAPES or stem in SYNONYMS:
                return stem
    return None


def library() -> list[Target]:
    """Every shape in every colour: the unconditional set for classifier-free guidance."""
    return [Target(f"{c} {s}", [Part(s, COLORS[c])]) for s in SHAPES for c in COLORS]


def targets_from_file(path: str | Path) -> list[Target]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TargetError(f"targets file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TargetError(f"targets file {str(path)!r} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TargetError('targets file must hold {"targets": [...]} with at least one target')
    return targets_from_data(data)


def targets_from_data(data: dict | list) -> list[Target]:
    """Targets from the JSON object itself ({"targets": [...]}) or its list."""
    entries = data.get("targets") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise TargetError('targets must be {"targets": [...]} with at least one target')
    return [_target_from_json(entry, index) for index, entry in enumerate(entries)]


def _target_from_json(entry: dict, index: int) -> Target:
    where = f"targets[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("parts"), list) or not entry["parts"]:
        raise TargetError(f"{where}: needs a non-empty 'parts' list")
    parts = [_part_from_json(part, f"{where}.parts[{j}]") for j, part in enumerate(entry["parts"])]
    weight = entry.get("weight", 1.0)
    if not isinstance(weight, (int, float)) or not weight > 0:
        raise TargetError(f"{where}.weight: must be a positive number")
    return Target(str(entry.get("name", f"target {index}")), parts, float(weight))


def _part_from_json(part: dict, where: str) -> Part:
    if not isinstance(part, dict) or part.get("shape") not in SHAPES:
        raise TargetError(f"{where}.shape: must be one of {', '.join(SHAPES)}")
    color = part.get("color", "white")
    if isinstance(color, str):
        color = _color_from_json(color, f"{where}.color")
    scale = part.get("scale", 1.0)
    scale = (scale,) * 3 if isinstance(scale, (int, float)) else scale
    values = {"color": color, "center": part.get("center", (0, 0, 0)), "scale": scale, "rotation": part.get("rotation", (0, 0, 0))}
    for name, value in values.items():
        if not (isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
            raise TargetError(f"{where}.{name}: must be three numbers")
    if not all(0 <= c <= 1 for c in values["color"]) or not all(s > 0 for s in values["scale"]):
        raise TargetError(f"{where}: colour components must be in 0..1 and scales positive")
    stripes = _stripes_from_json(part["stripes"], f"{where}.stripes") if part.get("stripes") is not None else None
    return Part(part["shape"], *(tuple(float(v) for v in values[k]) for k in ("color", "center", "scale", "rotation")), stripes=stripes)


AXES = {"x": 0, "y": 1, "z": 2}


def _color_from_json(color, where: str) -> tuple[float, float, float]:
    if isinstance(color, str):
        if color not in COLORS:
            raise TargetError(f"{where}: must be one of {', '.join(COLORS)} or [r, g, b] in 0..1")
        return COLORS[color]
    if not (isinstance(color, (list, tuple)) and len(color) == 3 and all(isinstance(c, (int, float)) and 0 <= c <= 1 for c in color)):
        raise TargetError(f"{where}: must be one of {', '.join(COLORS)} or [r, g, b] in 0..1")
    return tuple(float(c) for c in color)


def _stripes_from_json(stripes, where: str) -> tuple[tuple[float, float, float], float, int]:
    if not isinstance(stripes, dict):
        raise TargetError(f'{where}: must be {{"color": ..., "width": w, "axis": "x" | "y" | "z"}}')
    width, axis = stripes.get("width"), stripes.get("axis", "z")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0.01 <= width <= 2:
        raise TargetError(f"{where}.width: must be a number from 0.01 to 2 (world units)")
    if axis not in AXES:
        raise TargetError(f"{where}.axis: must be x, y or z")
    return _color_from_json(stripes.get("color", "white"), f"{where}.color"), float(width), AXES[axis]


def load_targets(prompt: str, targets: str | dict | list = "") -> list[Target]:
    """The config's targets (a file path, or the object itself), else the prompt's."""
    if isinstance(targets, (dict, list)):
        return targets_from_data(targets)
    return targets_from_file(targets) if targets else targets_from_prompt(prompt)
