"""Stable Diffusion guidance through diffusers: score distillation as DreamFusion does it (docs/ARCHITECTURE.md §4.5).
About 350 lines: the model's loading, with a message for each way it fails, belongs with its use.

For a render x (B, H, W, 3) in [0, 1] and a timestep t:

    z     = VAE.encode(resize(2x - 1, S x S)) * scaling_factor     S = UNet sample size * VAE factor (512)
    z_t   = sqrt(abar_t) z + sqrt(1 - abar_t) eps                   eps ~ N(0, I)
    eps_u, eps_c = UNet([z_t, z_t], t, [negative prompt, prompt + ", <view> view"])    one batch of 2B
    eps_hat = eps_u + s (eps_c - eps_u)                             classifier-free guidance, s = 100
    g     = w(t) (eps_hat - eps),  w(t) = 1 - abar_t                (Poole et al. 2022, Eq. 3)

and g reaches z through the latent-target loss 0.5 ||z - sg(z - g)||^2, so the VAE encoder and the
renderer carry it back to the field. The scheduler's `alphas_cumprod` is the one table behind
w(t) and behind the TP-SDS schedule's W_d.

Loading: a local folder is read with `local_files_only=True`; a hub id is looked up in the local
Hugging Face cache first and downloaded (once) only when it is not there, by hub.py, which
reports the bytes and can be stopped; `hub:ID` is a hub id even where a local folder has that
name (what a remote client's model becomes, serve/remote_policy.py). With `weights="safetensors"`
only safetensors files load (diffusers' and transformers' `use_safetensors=True`): a model that has
only PyTorch pickles (`.bin`, unpickled on load) is refused. Every failure — missing
folder, wrong layout, no network, unreadable weights — ends in one `TrainingError(code, message,
hint)` (backend/errors.py), never a stack trace.

On a GPU (CUDA or Apple's MPS) the UNet and VAE run in fp16 (precision "auto"; `bf16` and `fp32`
on request, and bf16 or fp32 on the CPU), with PyTorch's scaled-dot-product attention; channels-last
(`"extra": {"channels_last": true}`) and `torch.compile` of the UNet (`"extra": {"compile_unet":
true}`, or a torch.compile backend's name) are options to measure, not defaults. The text encoder
runs once, for the five prompts (four view directions and the negative prompt), and is then
dropped; the VAE decoder is never loaded onto the device (SDS only encodes). `low_vram` adds, for
small cards: the text encoder runs on the CPU in fp32, the UNet's attention is sliced (diffusers'
`set_attention_slice("auto")`), and the VAE encoder recomputes its activations in the backward pass
(gradient checkpointing) instead of keeping them. diffusers' `enable_model_cpu_offload` is not used:
it needs `accelerate`, and SDS runs both UNet and VAE every step, so whole-model offload would move
~1.7 GB across PCIe per step.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..cameras import Cameras
from ..config import HUB_ID, HUB_PREFIX
from ..errors import TrainingError
from . import View, classifier_free_guidance, sds_latent_target_loss, zero_non_finite
from .hub import Progress, cached_snapshot, complete_folder, download, first_line

log = logging.getLogger("dreamtime")

DEFAULT_GUIDANCE_SCALE = 100.0  # DreamFusion-style SDS needs a far larger CFG scale than sampling does
VIEW_DIRECTIONS = ("front", "side", "back", "overhead")
OVERHEAD_ELEVATION = 60.0  # degrees; above it the view is "overhead" (DreamFusion)
FRONT_AZIMUTH = 45.0  # |azimuth| below it: "front"
BACK_AZIMUTH = 135.0  # |azimuth| above it: "back"; in between: "side"
SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
NETWORKS = ("unet", "vae", "text_encoder")  # the subfolders with weight files
LAYOUT_HINT = (
    "Point [[model]] at a diffusers Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/, "
    "tokenizer/, scheduler/: what save_pretrained or `python -m backend make-model` writes) or a hub id."
)


# ---------------------------------------------------------------------- view-dependent prompts
def view_suffix(elevation_deg: float, azimuth_deg: float) -> str:
    """The prompt suffix for a camera: "overhead view" above 60° elevation, else front / side / back
    by azimuth (0° = front; |az| < 45° front, |az| > 135° back), as DreamFusion."""
    index = view_indices(torch.tensor([float(elevation_deg)]), torch.tensor([float(azimuth_deg)]))
    return f"{VIEW_DIRECTIONS[int(index[0])]} view"


def view_indices(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor) -> torch.Tensor:
    """Index into VIEW_DIRECTIONS (B,) of each camera, computed where the cameras are (no host round trip)."""
    azimuth = ((azimuth_deg.float() + 180.0) % 360.0 - 180.0).abs()  # in [0, 180]
    side = torch.where(azimuth < FRONT_AZIMUTH, 0, torch.where(azimuth > BACK_AZIMUTH, 2, 1))
    return torch.where(elevation_deg > OVERHEAD_ELEVATION, 3, side)


def eps_from_prediction(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The UNet's noise estimate, whatever it was trained to predict (alpha_bar broadcastable to x_t).

    epsilon: as is; v_prediction (SD 2.x 768): eps = sqrt(abar) v + sqrt(1 - abar) x_t;
    sample: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)   (Salimans & Ho 2022, Sec. 4).
    """
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * output + (1 - alpha_bar).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - alpha_bar.sqrt() * output) / (1 - alpha_bar).sqrt()
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


# ---------------------------------------------------------------------- loading
@dataclass
class StableDiffusionParts:
    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    text_encoder: Any  # transformers CLIPTextModel
    tokenizer: Any  # transformers CLIPTokenizer
    scheduler: Any  # diffusers DDPMScheduler (any SD scheduler config gives the same alphas_cumprod)


def _error(code: str, message: str, hint: str = ""):
    return TrainingError(code, message, hint)


def resolve_model_folder(model: str, on_progress: Progress | None = None, stop: threading.Event | None = None) -> Path:
    """The local diffusers folder for `model`: the folder itself, or a hub id's snapshot in the
    Hugging Face cache, downloaded into it (once) only if it is not complete there and the hub is
    online. A download reports `on_progress(done, total)` bytes and ends when `stop` is set (hub.py)."""
    if model.startswith(HUB_PREFIX):
        model_id = model[len(HUB_PREFIX):]
        if not HUB_ID.match(model_id):
            raise _error("model_not_found", f"{model_id!r} is not a hub id (ORG/NAME)", LAYOUT_HINT)
        return _hub_snapshot(model_id, on_progress, stop)
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        raise _error(
            "model_layout",
            f"{path} is a single file, not a diffusers folder",
            "Convert it once: StableDiffusionPipeline.from_single_file(FILE).save_pretrained(DIR), then use [[model=DIR]].",
        )
    if not HUB_ID.match(model) or model.startswith("."):
        raise _error("model_not_found", f"no model folder at {model}", LAYOUT_HINT)
    return _hub_snapshot(model, on_progress, stop)


def cached_model_folder(model: str) -> Path | None:
    """`model`'s local folder without touching the network: the folder itself, or a hub id's complete
    snapshot in the Hugging Face cache; None when it is neither (what `doctor` reports)."""
    path = Path(model).expanduser()
    if not model.startswith(HUB_PREFIX) and path.is_dir():
        return path
    model_id = model.removeprefix(HUB_PREFIX)
    if not HUB_ID.match(model_id) or model_id.startswith("."):
        return None
    return cached_snapshot(model_id)


def _hub_snapshot(model_id: str, on_progress: Progress | None, stop: threading.Event | None) -> Path:
    from huggingface_hub import constants

    folder = cached_snapshot(model_id)
    if folder is not None:
        return folder
    if constants.HF_HUB_OFFLINE:
        raise _error(
            "model_offline",
            f"{model_id} is not a local folder and not in the Hugging Face cache, and the hub is offline (HF_HUB_OFFLINE is set)",
            f"Run once with network to cache it, or download it where there is network (`hf download {model_id} "
            "--local-dir DIR`) and use [[model=DIR]].",
        )
    log.info("downloading %s into the Hugging Face cache (once)", model_id)
    folder = download(model_id, on_progress, stop)
    if not complete_folder(folder):
        raise _error("model_layout", f"{model_id} has no complete Stable Diffusion pipeline (unet/, vae/, text_encoder/ with weights, "
                                     "tokenizer/, scheduler/)", LAYOUT_HINT)
    return folder


def check_layout(folder: Path) -> None:
    if not (folder / "model_index.json").is_file():
        weights = sorted(p.name for p in folder.glob("*") if p.suffix in (".safetensors", ".ckpt"))
        hint = (
            f"{weights[0]} looks like a single-file checkpoint: convert it once with "
            "StableDiffusionPipeline.from_single_file(FILE).save_pretrained(DIR)." if weights else LAYOUT_HINT
        )
        raise _error("model_layout", f"{folder} is not a diffusers Stable Diffusion folder: it has no model_index.json", hint)
    missing = [name + "/" for name in SUBFOLDERS if not (folder / name).is_dir()]
    if missing:
        raise _error("model_layout", f"{folder} is not a complete Stable Diffusion folder: it lacks {', '.join(missing)}", LAYOUT_HINT)


def load_parts(folder: Path, dtype: torch.dtype, text_dtype: torch.dtype = torch.float32,
               safetensors_only: bool = False) -> StableDiffusionParts:
    """Each component from `folder`, with local_files_only=True: what a user's model goes through.
    `safetensors_only`: the networks' weights from safetensors files only, never a pickle."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    check_layout(folder)
    # Without accelerate, diffusers builds the model then loads the weights (and warns that it does).
    fast_init = {"low_cpu_mem_usage": importlib.util.find_spec("accelerate") is not None}
    safe = {"use_safetensors": True} if safetensors_only else {}
    loaders = {
        "unet": lambda: UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", torch_dtype=dtype, local_files_only=True, **fast_init, **safe
        ),
        "vae": lambda: AutoencoderKL.from_pretrained(
            folder, subfolder="vae", torch_dtype=dtype, local_files_only=True, **fast_init, **safe
        ),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=text_dtype, local_files_only=True,
                                                              **safe),
        "tokenizer": lambda: CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True),
        "scheduler": lambda: DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True),
    }
    parts = {}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar would break the CLI's progress bar
    try:
        for name, load in loaders.items():
            if safe and name in NETWORKS and not any((folder / name).glob("*.safetensors")):
                raise _error(
                    "model_weights",
                    f"the {name} of {folder} has no safetensors weights, and this backend loads no others (PyTorch pickles run code)",
                    "Save the model again with save_pretrained (it writes safetensors), or, if you trust its files, "
                    "start the server with --allow-pickle-weights.",
                )
            try:
                parts[name] = load()
            except Exception as exc:  # truncated safetensors, a foreign config, a missing file, ...
                raise _error(
                    "model_corrupt",
                    f"cannot load the {name} of {folder} ({first_line(exc)})",
                    "The files may be incomplete or of another model type: download the model again, or rebuild it with make-model.",
                ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    parts = StableDiffusionParts(**parts)
    unet = parts.unet.config
    if unet.in_channels != 4 or unet.get("addition_embed_type") is not None:  # inpainting, SDXL, ...
        raise _error(
            "model_unsupported",
            f"{folder} is not a text-to-image SD 1.x/2.x model "
            f"(UNet in_channels {unet.in_channels}, addition_embed_type {unet.get('addition_embed_type')})",
            "Use an SD 1.x/2.x text-to-image model, e.g. stabilityai/stable-diffusion-2-1-base.",
        )
    return parts


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The UNet's and VAE's dtype: auto is fp16 on a GPU (CUDA, MPS) and fp32 on the CPU; fp16 needs a GPU."""
    from ..config import ConfigError

    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision", "fp16 needs a GPU (cuda or mps); on the CPU use bf16, fp32 or auto")
    if precision == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    return DTYPES[precision]


def build_sd_guidance(config, device: torch.device) -> "StableDiffusionGuidance":
    """The `sd` guidance of a GenerationConfig (model, prompts, scale, precision, low_vram)."""
    dtype = resolve_dtype(config.precision, device)
    text_on_cpu = config.low_vram or device.type != "cuda"
    parts = load_parts(resolve_model_folder(config.model), dtype, torch.float32 if text_on_cpu else dtype,
                       safetensors_only=config.weights == "safetensors")
    scale = DEFAULT_GUIDANCE_SCALE if config.guidance_scale < 0 else config.guidance_scale
    return StableDiffusionGuidance(
        parts, config.prompt, config.negative_prompt, scale, device, dtype, grad_clip=config.extra.get("grad_clip"),
        low_vram=config.low_vram, channels_last=bool(config.extra.get("channels_last", False)),
        compile_unet=config.extra.get("compile_unet", False),
    )


# ---------------------------------------------------------------------- the guidance
class StableDiffusionGuidance:
    def __init__(
        self,
        parts: StableDiffusionParts,
        prompt: str,
        negative_prompt: str = "",
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        grad_clip: float | None = None,  # clamp each entry of g to [-clip, clip] (None: no clamp)
        low_vram: bool = False,
        channels_last: bool = False,  # UNet and VAE in channels-last memory format (a measured option)
        compile_unet: bool | str = False,  # torch.compile the UNet (True: inductor; or a torch.compile backend's name)
    ):
        self.device, self.dtype = torch.device(device), dtype
        self.guidance_scale, self.grad_clip = guidance_scale, grad_clip
        scheduler = parts.scheduler
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)  # (T,)
        self.prediction_type = scheduler.config.prediction_type
        self.unet, self.vae = parts.unet, parts.vae
        self.vae.decoder = self.vae.post_quant_conv = None  # SDS only encodes
        self.scaling_factor = self.vae.config.scaling_factor
        self.image_size = self.unet.config.sample_size * 2 ** (len(self.vae.config.block_out_channels) - 1)  # 512 for SD
        self.non_finite: tuple[torch.Tensor, int] | None = None  # of the last losses() call (guidance/__init__.py)
        self._prepare_networks(low_vram, channels_last, compile_unet)
        parts.text_encoder.to("cpu" if low_vram else self.device)
        self.prompts = [f"{prompt}, {direction} view" for direction in VIEW_DIRECTIONS]
        embeddings = self._encode_text(parts.tokenizer, parts.text_encoder, self.prompts + [negative_prompt])  # (5, L, D)
        self.cond, self.uncond = embeddings[:4], embeddings[4:]  # (4, L, D) one per direction, (1, L, D)

    def _prepare_networks(self, low_vram: bool, channels_last: bool, compile_unet: bool | str) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        # channels-last is what cuDNN's fp16 convolutions are said to want: measured before it is a default.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        for net in (self.unet, self.vae):
            net.requires_grad_(False).eval()
            net.to(self.device, memory_format=self.memory_format)
        self.unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA (flash / memory-efficient kernels)
        if low_vram:
            self.unet.set_attention_slice("auto")
            self.vae.enable_gradient_checkpointing()
        self.unet_forward = self.unet
        if compile_unet:  # the first steps compile (minutes for SD); the module itself stays as it was
            self.unet_forward = torch.compile(self.unet, backend="inductor" if compile_unet is True else str(compile_unet))

    @torch.no_grad()
    def _encode_text(self, tokenizer, text_encoder, texts: list[str]) -> torch.Tensor:
        """Last hidden states (N, L, D) of the text encoder, on the guidance's device and dtype."""
        long = [text for text in texts if len(tokenizer(text).input_ids) > tokenizer.model_max_length]
        if long:  # once, and short: a 10,000-character prompt is valid
            log.warning("prompt longer than %d tokens; the text encoder reads only its start: %.80r", tokenizer.model_max_length, long[0])
        tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
        text_encoder.requires_grad_(False).eval()
        states = text_encoder(tokens.input_ids.to(text_encoder.device))[0]  # (N, L, D)
        return states.to(self.device, self.dtype)

    def text_embeddings(self, cameras: Cameras) -> torch.Tensor:
        """Conditional embeddings (B, L, D): the prompt with each camera's view suffix."""
        return self.cond[view_indices(cameras.elevation, cameras.azimuth).to(self.device)]

    def encode(self, rgb: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents z (B, 4, h, w) of renders (B, H, W, 3) in [0, 1], differentiable, in the model's dtype."""
        x = rgb.permute(0, 3, 1, 2)  # (B, 3, H, W)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, (self.image_size, self.image_size), mode="bilinear", align_corners=False)  # (B, 3, S, S)
        x = (x * 2 - 1).to(self.dtype).contiguous(memory_format=self.memory_format)
        return self.vae.encode(x).latent_dist.sample(generator) * self.scaling_factor  # (B, 4, S/f, S/f)

    @torch.no_grad()
    def eps_hat(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Guided noise estimate (B, 4, h, w) in fp32: one UNet call on [uncond, cond] (2B)."""
        batch = z_t.shape[0]
        model_input = torch.cat([z_t, z_t]).to(self.dtype).contiguous(memory_format=self.memory_format)  # (2B, 4, h, w)
        states = torch.cat([self.uncond.expand(batch, -1, -1), cond])  # (2B, L, D)
        output = self.unet_forward(model_input, torch.cat([t, t]), encoder_hidden_states=states).sample.float()  # (2B, 4, h, w)
        alpha_bar = self.alphas_cumprod[torch.cat([t, t])].view(-1, 1, 1, 1)
        eps_uncond, eps_cond = eps_from_prediction(output, torch.cat([z_t, z_t]).float(), alpha_bar, self.prediction_type).chunk(2)
        return classifier_free_guidance(eps_uncond, eps_cond, self.guidance_scale)

    def sds_grad(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """g = w(t) (eps_hat(z_t) - eps), w(t) = 1 - abar_t, for latents and noise (B, 4, h, w); fp32."""
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        with torch.no_grad():
            z_t = alpha_bar.sqrt() * latents.detach().float() + (1 - alpha_bar).sqrt() * noise
            grad = (1 - alpha_bar) * (self.eps_hat(z_t, t, cond) - noise)
            grad, count = zero_non_finite(grad)  # fp16 overflow: counted, then 0
            self.non_finite = (count, grad.numel())
            return grad if self.grad_clip is None else grad.clamp(-self.grad_clip, self.grad_clip)

    def losses(self, rgb: torch.Tensor, t: torch.Tensor, view: View) -> dict[str, torch.Tensor]:
        """SDS loss whose gradient w.r.t. the latents of the render (B, H, W, 3) is w(t) (eps_hat - eps)."""
        latents = self.encode(rgb, view.generator)  # (B, 4, h, w)
        noise = torch.randn(latents.shape, generator=view.generator, device=view.generator.device).to(self.device)  # (B, 4, h, w) fp32
        grad = self.sds_grad(latents, noise, t, self.text_embeddings(view.cameras))
        return {"sds": sds_latent_target_loss(latents.float(), grad)}
