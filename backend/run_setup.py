"""What a run needs before its loop: the device, the guidance, and cheap checks of the config."""

from __future__ import annotations

import torch

from .config import ConfigError, GenerationConfig


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA device is available; use [[device=cpu]]")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_guidance(config: GenerationConfig, device: torch.device) -> str:
    if config.guidance != "auto":
        return config.guidance
    return "sd" if device.type == "cuda" else "analytic"


def preflight(config: GenerationConfig, model: bool = True) -> None:
    """Checks to run before making a run folder: the config, the analytic prior's words, and (with
    `model`) the SD model, which a hub id may have to download first: the server leaves that to the
    run's own thread (find_model), so a download never holds up its requests."""
    config.validate()
    if config.init_mesh:
        from .init_mesh import load_init_mesh

        load_init_mesh(config.init_mesh)  # missing, empty, not a mesh: ConfigError("init_mesh", ...)
    kind = resolve_guidance(config, resolve_device(config.device))
    if kind == "analytic":
        from .guidance.targets import TargetError, load_targets

        try:
            load_targets(config.prompt, config.targets)  # raises TargetError naming unknown words
        except TargetError as exc:
            if config.targets:  # the targets, not the prompt, are what to fix
                raise ConfigError("targets", str(exc)) from None
            raise
    elif kind == "sd" and model:
        find_model(config)


def find_model(config: GenerationConfig, on_progress=None, stop=None):
    """The SD model's local folder, checked; a missing folder, a wrong layout, no network, a failed
    or stopped download (code "cancelled") are each a TrainingError. on_progress(done, total) bytes."""
    from .guidance.stable_diffusion import check_layout, resolve_model_folder

    folder = resolve_model_folder(config.model, on_progress, stop)
    check_layout(folder)
    return folder


def build_guidance(config: GenerationConfig, kind: str, device: torch.device):
    """The guidance object for `kind`, on `device`."""
    if kind == "analytic":
        from .guidance.analytic import AnalyticGuidance
        from .guidance.target_volumes import TargetSet
        from .guidance.targets import library, load_targets, read_prompt
        from .schedule import scaled_linear_alphas_cumprod

        if config.background == "learned":
            raise ConfigError("background", "the analytic prior needs a known background: random, white or black")
        scale = 1.0 if config.guidance_scale < 0 else config.guidance_scale
        targets = TargetSet(load_targets(config.prompt, config.targets), device=device)
        unconditional = TargetSet(library(), device=device) if scale != 1.0 else None
        alphas_cumprod = torch.tensor(scaled_linear_alphas_cumprod(), dtype=torch.float32, device=device)
        guidance = AnalyticGuidance(targets, alphas_cumprod, scale, unconditional)
        guidance.notes = [] if config.targets else read_prompt(config.prompt)[1]  # how the prompt was read: the run says it
        return guidance
    from .guidance.stable_diffusion import build_sd_guidance

    return build_sd_guidance(config, device)
