"""A CLIP model that embeds renders and prompts, for the bench's R-precision and CLIP score.

`--clip ID|DIR` names it: a local folder (what `save_pretrained` writes, or `python -m backend
make-model --shape tiny-clip` for tests) is read with `local_files_only=True`; a hub id such as
`openai/clip-vit-base-patch32` is taken from the Hugging Face cache, downloaded into it once by
`preflight` when it is not there and the hub is online. Failures end in one `ClipError` line.

Images go through the model's own CLIPProcessor (resize, centre crop, CLIP's mean and std) as
8-bit RGB, exactly as a PNG of the render would; embeddings are the projected, unit-length image
and text features (CLIPModel.visual_projection / text_projection of the pooled outputs).
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("dreamtime")

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ClipError(ValueError):
    """A CLIP model that cannot be found or loaded (one line for the CLI)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


@contextmanager
def quiet_transformers():
    """transformers' warnings (the PIL image-processor fallback without torchvision) and progress
    bars (per-tensor loading) off for the block: they would break the bench's progress bar."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load(source: str, local_only: bool):
    with quiet_transformers():
        from transformers import CLIPModel, CLIPProcessor

        model = CLIPModel.from_pretrained(source, local_files_only=local_only)
        processor = CLIPProcessor.from_pretrained(source, local_files_only=local_only)
    return model, processor


def load_clip(source: str, allow_download: bool = False):
    """(CLIPModel, CLIPProcessor) of a folder or a hub id (see module doc); raises ClipError."""
    path = Path(source).expanduser()
    if path.is_dir():
        try:
            return _load(str(path), local_only=True)
        except Exception as exc:
            raise ClipError(f"--clip: cannot load a CLIP model from {path} ({_first_line(exc)}); "
                            "it needs what CLIPModel and CLIPProcessor save_pretrained write") from None
    if path.exists() or not HUB_ID.match(source):
        raise ClipError(f"--clip: no CLIP folder at {source} "
                        "(a folder from save_pretrained, or a hub id such as openai/clip-vit-base-patch32)")
    try:
        return _load(source, local_only=True)
    except Exception as exc:
        cached_error = exc
    from huggingface_hub import constants

    if not allow_download or constants.HF_HUB_OFFLINE:
        raise ClipError(f"--clip: {source} is not a local folder and not in the Hugging Face cache ({_first_line(cached_error)}); "
                        f"run once with network to cache it, or `hf download {source} --local-dir DIR` and pass --clip DIR") from None
    log.info("downloading %s into the Hugging Face cache (once)", source)
    try:
        return _load(source, local_only=False)
    except Exception as exc:
        raise ClipError(f"--clip: cannot download {source} ({_first_line(exc)})") from None


def preflight(source: str) -> None:
    """Load once in the main process (downloading a hub id into the cache if needed), so a bad
    --clip fails before any run starts and the workers find it locally."""
    load_clip(source, allow_download=True)


class ClipEmbedder:
    """Unit-length CLIP embeddings of renders and prompts, on one device."""

    def __init__(self, source: str, device: torch.device | str = "cpu"):
        model, self.processor = load_clip(source)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def text(self, prompts: list[str]) -> np.ndarray:
        """(P, D) for P prompts (cut to the model's 77 tokens)."""
        tokens = self.processor(text=list(prompts), padding=True, truncation=True, return_tensors="pt")
        pooled = self.model.text_model(input_ids=tokens["input_ids"].to(self.device),
                                       attention_mask=tokens["attention_mask"].to(self.device)).pooler_output
        return _unit(self.model.text_projection(pooled))

    @torch.no_grad()
    def images(self, rgb: torch.Tensor) -> np.ndarray:
        """(N, D) for renders (N, H, W, 3) in [0, 1]."""
        pixels = (rgb.detach().clamp(0, 1).float().cpu().numpy() * 255 + 0.5).astype(np.uint8)
        inputs = self.processor(images=list(pixels), return_tensors="pt")
        pooled = self.model.vision_model(pixel_values=inputs["pixel_values"].to(self.device)).pooler_output
        return _unit(self.model.visual_projection(pooled))


def _unit(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True).clamp(min=1e-12)).cpu().numpy()


_CACHE: dict[tuple[str, str], ClipEmbedder] = {}


def embedder(source: str, device: torch.device | str) -> ClipEmbedder:
    """One ClipEmbedder per model and device in this process (a bench worker runs many runs)."""
    key = (source, str(device))
    if key not in _CACHE:
        _CACHE[key] = ClipEmbedder(source, device)
    return _CACHE[key]
