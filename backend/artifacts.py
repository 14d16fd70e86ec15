"""What a run writes to its folder besides the checkpoint (docs/ARCHITECTURE.md §6, §7).

Previews (an evaluation-camera render every `preview_every` steps), ring.png (the whole evaluation
ring), the asset (the final one and mid-run `extract`s: backend/asset), metrics.json, and for the analytic prior the
quality of the ring and of the mesh against the known targets. Every file is written atomically and
announced with a protocol event where the protocol has one.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import protocol, wording
from .cameras import Cameras, fixed_light
from .config import GenerationConfig
from .field import NeRFField
from .renderer import RenderSettings, render
from .run_folder import atomic_path, atomic_write_text

log = logging.getLogger("dreamtime")


class RunArtifacts:
    """The writers of one run. `outputs` and `metrics` are the trainer's own dicts, filled in place."""

    def __init__(
        self,
        config: GenerationConfig,
        field: NeRFField,
        guidance: Any,
        ring: Cameras,
        run_dir: Path,
        device: torch.device,
        run_id: str,
        on_event: Callable[[dict[str, Any]], None],
        outputs: dict[str, Any],
        metrics: dict[str, Any],
    ):
        self.config, self.field, self.guidance, self.ring = config, field, guidance, ring
        self.run_dir, self.device, self.run_id, self.on_event = run_dir, device, run_id, on_event
        self.outputs, self.metrics = outputs, metrics
        self.mesh = None  # the final mesh, once extract_mesh made one
        self._target_ring: torch.Tensor | None = None  # (K, V, H, W, 3), rendered once

    # ------------------------------------------------------------------ evaluation renders
    @torch.no_grad()
    def render_ring(self, resolution: int | None = None, cameras: Cameras | None = None) -> torch.Tensor:
        """Evaluation renders (V, H, W, 3): lambertian, the fixed light, white background."""
        cameras = self.ring if cameras is None else cameras
        settings = self._eval_settings(cameras)
        resolution = resolution or self.config.preview_resolution
        return torch.cat([render(self.field, cameras[i], resolution, self.config.samples_per_ray, settings_i,
                                 radius=self.config.scene_radius)["rgb"]
                          for i, settings_i in enumerate(self._split(settings, len(cameras)))])

    def _eval_settings(self, cameras: Cameras) -> RenderSettings:
        return RenderSettings("lambertian", fixed_light(cameras), torch.ones(len(cameras), 3, device=self.device))

    @staticmethod
    def _split(settings: RenderSettings, n: int) -> list[RenderSettings]:
        return [RenderSettings(settings.shading, settings.light[i : i + 1], settings.background[i : i + 1],
                               settings.ambient) for i in range(n)]

    # ------------------------------------------------------------------ images
    def write_preview(self, step: int, ring: torch.Tensor | None = None) -> Path:
        """previews/step_XXXXX.png: one view of the ring, the next each preview; taken from `ring` (render_ring()) when given."""
        from PIL import Image

        index = (step // max(self.config.preview_every, 1)) % len(self.ring)
        image = self.render_ring(cameras=self.ring[index])[0] if ring is None else ring[index]  # (H, W, 3)
        pixels = (image.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        path = self.run_dir / "previews" / f"step_{step:05d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(pixels).save(tmp)
        self.outputs["preview"] = str(path)
        self.on_event(protocol.preview(self.run_id, step, str(path), pixels.shape[1], pixels.shape[0]))
        return path

    def write_ring(self, ring: torch.Tensor | None = None) -> Path:
        """The evaluation ring side by side in one PNG (ring.png in the run folder); `ring`: render_ring(), if made already."""
        from PIL import Image

        views = (self.render_ring() if ring is None else ring).clamp(0, 1).cpu()  # (V, H, W, 3)
        strip = torch.cat(list(views), dim=1)  # (H, V*W, 3)
        path = self.run_dir / "ring.png"
        with atomic_path(path) as tmp:
            Image.fromarray((strip.numpy() * 255 + 0.5).astype(np.uint8)).save(tmp)
        return path

    # ------------------------------------------------------------------ meshes
    @torch.no_grad()
    def mesh_of_field(self):
        """Marching cubes of the field: density at mesh_threshold, or s = 0 once it is an SDF; blurred by
        mesh_smooth first (log density; an SDF linearly, which removes sub-voxel tunnels at sharp edges)."""
        from .mesh import extract_mesh

        cfg = self.config
        inside, level = self.field.surface(cfg.mesh_threshold)
        return extract_mesh(
            inside, self.field.albedo, cfg.mesh_resolution, level, device=self.device, smooth=cfg.mesh_smooth,
            smooth_log=not self.field.sdf_mode,
        )

    def asset_of(self, mesh):
        """The artist's asset of a marching-cubes mesh: decimated to mesh_faces, its texture baked from
        the field's albedo (backend/asset), in the field's frame; a failed atlas leaves vertex colours and a warning."""
        from .asset import make_asset, numpy_albedo

        asset = make_asset(mesh, numpy_albedo(self.field.albedo, self.device), self.config.mesh_faces, self.config.texture_size)
        if asset.warning:
            log.warning("%s", asset.warning)
            self.on_event(protocol.log("warning", asset.warning))
        return asset

    def in_source_frame(self, asset):
        """The asset as exported: in the init mesh's own frame when the run started from one (init_mesh.py),
        so it lands where the source was (outputs' `mesh_frame` says "source"); else as it is. Baked in the
        field's frame first: the texture and UVs do not move, only the vertices (a uniform scale and a shift)."""
        from dataclasses import replace

        from .init_mesh import to_source_frame

        frame = self.metrics.get("init_mesh", {}).get("frame")
        if not frame:
            return asset
        self.outputs["mesh_frame"] = "source"
        uv_mesh = asset.uv_mesh
        if uv_mesh is not None:
            uv_mesh = replace(uv_mesh, vertices=uv_mesh.vertices / frame["scale"] + np.asarray(frame["center"]))
        return replace(asset, mesh=to_source_frame(asset.mesh, frame), uv_mesh=uv_mesh)

    def no_mesh_hint(self) -> str:
        """What to change when the field has no surface (markers: backend/wording.py)."""
        smooth = " or [[mesh_smooth]]" if self.config.mesh_smooth > 0 else ""
        return f"Train longer (more [[steps]]), or lower [[mesh_threshold]]{smooth}, and generate again."

    def extract_now(self, step: int) -> None:
        """A mid-run asset in extracts/step_XXXXX/, announced with a mesh event; training goes on."""
        from .asset.export import export_asset
        from .mesh import MeshError

        try:
            asset = self.asset_of(self.mesh_of_field())
        except MeshError as exc:
            self.on_event(protocol.error(self.run_id, "extract", f"No mesh at step {step}: {exc}.", self.no_mesh_hint()))
            return
        folder = self.run_dir / "extracts" / f"step_{step:05d}"
        path = export_asset(self.in_source_frame(asset), folder, ("glb",), vertex_colors=self.config.vertex_colors)["glb"]
        self.on_event(protocol.mesh(self.run_id, str(path), len(asset.mesh.vertices), len(asset.mesh.faces)))

    def extract_mesh(self, formats: tuple[str, ...]) -> dict[str, Path]:
        """The final asset in the run folder; each stage's seconds in metrics.json `mesh.seconds`."""
        from .asset.export import export_asset
        from .mesh import MeshError

        self.metrics.setdefault("mesh", {})
        self.mesh = None
        tick = time.perf_counter()
        try:
            extracted = self.mesh_of_field()
        except MeshError as exc:
            text = f"No mesh: {exc}."
            log.warning("%s %s", text, wording.cli(self.no_mesh_hint()))
            self.outputs["warning"] = text
            self.on_event(protocol.message("log", id=self.run_id, level="warning", code="no_mesh", message=text, hint=self.no_mesh_hint()))
            return {}
        seconds = {"extract": time.perf_counter() - tick}
        asset = self.asset_of(extracted)
        self.mesh = asset.mesh
        tick = time.perf_counter()
        paths = export_asset(self.in_source_frame(asset), self.run_dir, formats, vertex_colors=self.config.vertex_colors)
        seconds.update(asset.seconds, export=time.perf_counter() - tick)
        self.metrics["mesh"].update({
            "n_vertices": len(self.mesh.vertices), "n_faces": len(self.mesh.faces), "euler": int(self.mesh.euler_number),
            "n_faces_extracted": len(extracted.faces), "euler_extracted": int(extracted.euler_number),
            "textured": asset.texture is not None, "texel_coverage": round(asset.texel_coverage, 4), "warning": asset.warning,
            "seconds": {name: round(value, 3) for name, value in seconds.items()},
        })
        first = paths[formats[0]]
        self.on_event(protocol.mesh(self.run_id, str(first), len(self.mesh.vertices), len(self.mesh.faces)))
        return paths

    # ------------------------------------------------------------------ quality (analytic prior)
    def evaluate_quality(self, ring: torch.Tensor | None = None) -> dict[str, Any]:
        """The ring against every target's (metrics.ring_quality); `ring`: render_ring(), if made already."""
        from .metrics import ring_quality

        resolution = self.config.preview_resolution
        renders = self.render_ring(resolution) if ring is None else ring
        targets = self.guidance.targets
        if self._target_ring is None:  # the targets never change: render their ring once
            settings = self._eval_settings(self.ring)
            self._target_ring = targets.render(self.ring, resolution, self.config.samples_per_ray, settings,
                                               self.config.scene_radius)  # (K, V, H, W, 3)
        return ring_quality(renders, self._target_ring, targets.names)

    def mesh_error(self, best_target: int) -> dict[str, Any]:
        from .mesh import sample_surface
        from .metrics import relative_chamfer, target_surface_points

        target = self.guidance.targets.targets[best_target]
        components = self.mesh.split(only_watertight=False)
        largest = max(components, key=lambda c: len(c.faces))
        colors = np.asarray(largest.visual.vertex_colors)[:, :3].mean(0) / 255
        return {
            "chamfer_rel": relative_chamfer(sample_surface(self.mesh, 20000), target_surface_points(target)),
            "largest_component_euler": int(largest.euler_number),
            "largest_component_mean_color": [round(float(c), 4) for c in colors],
            "target": target.name,
        }

    def write_metrics(self) -> Path:
        path = self.run_dir / "metrics.json"
        atomic_write_text(path, json.dumps(self.metrics, indent=1, allow_nan=True))
        return path
