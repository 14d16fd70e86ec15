"""Random-weight Stable Diffusion folders (and a tiny CLIP), for tests and for GPU timing without weights (docs/ARCHITECTURE.md §9).

`make_model("tiny", out)` writes a complete diffusers folder — model_index.json, unet/, vae/,
text_encoder/, tokenizer/, scheduler/ — that `StableDiffusionPipeline.from_pretrained(out,
local_files_only=True)` and the `sd` guidance load exactly as they load a downloaded model.

- `tiny`: UNet ~1 M parameters, 16² latents, VAE downsampling 2 (32² images); loads in well
  under a second on a CPU. For tests.
- `sd21-base`: the shapes of stabilityai/stable-diffusion-2-1-base (UNet 865.9 M parameters,
  64² latents, VAE downsampling 8 → 512² images, OpenCLIP-H text encoder of 23 layers). For
  timing on a GPU; saved in fp16 (~2.6 GB).
- `tiny-clip`: not SD but a random CLIP model and processor (`build_clip`, below), for the
  bench's `--clip` scores in tests.

The tokenizer's vocab.json and merges.txt are written here: a byte-level BPE as CLIP's (every
byte, every byte + "</w>", merges that spell common prompt words, then <|startoftext|> and
<|endoftext|>), so any text tokenizes, and prompt words become single tokens. The scheduler is
SD's: 1000 steps, betas linear in sqrt space from 0.00085 to 0.012 ("scaled_linear").
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 77  # CLIP's context length, as every SD model uses

# Words a prompt is likely to hold, each a single token of the test vocabulary.
PROMPT_WORDS = """
a an the of on in with and or to at by for from its is
front side back overhead view views top bottom left right
red green blue yellow white black orange purple pink brown gray grey gold silver colorful
cube sphere ball torus donut cylinder cone box pyramid ring
photo photograph dslr render rendering model highly high detailed detail quality realistic
low blurry ugly bad deformed cartoon sketch lowres
hamburger squirrel chair table car dog cat bird tree house teapot cup vase lamp robot
apple banana flower toy castle boat plane horse bunny rabbit frog owl mushroom cake
small large big tiny wooden metal glass stone shiny matte plastic
""".split()


@dataclass(frozen=True)
class ModelShape:
    unet: dict[str, Any]  # UNet2DConditionModel kwargs
    vae: dict[str, Any]  # AutoencoderKL kwargs
    text_encoder: dict[str, Any]  # CLIPTextConfig kwargs (vocab_size None: the tokenizer's)
    dtype: torch.dtype = torch.float32  # how the weights are saved
    scheduler: dict[str, Any] = field(
        default_factory=lambda: {
            "num_train_timesteps": 1000,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "prediction_type": "epsilon",
            "set_alpha_to_one": False,
            "skip_prk_steps": True,
            "steps_offset": 1,
        }
    )


SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape(
        unet={
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 16,
        },
        vae={
            "sample_size": 32,
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 4,
            "block_out_channels": (32, 64),
            "layers_per_block": 1,
            "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2,
            "norm_num_groups": 16,
        },
        text_encoder={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "max_position_embeddings": MAX_TOKENS,
            "vocab_size": None,
        },
    ),
    # stabilityai/stable-diffusion-2-1-base: unet/, vae/, text_encoder/ config.json.
    "sd21-base": ModelShape(
        unet={
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2,
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": 1024,
            "attention_head_dim": (5, 10, 20, 20),
            "use_linear_projection": True,
            "norm_num_groups": 32,
        },
        vae={
            "sample_size": 512,
            "in_channels": 3,
            "out_channels": 3,
            "latent_channels": 4,
            "block_out_channels": (128, 256, 512, 512),
            "layers_per_block": 2,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "norm_num_groups": 32,
        },
        text_encoder={
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_attention_heads": 16,
            "num_hidden_layers": 23,
            "projection_dim": 512,
            "hidden_act": "gelu",
            "max_position_embeddings": MAX_TOKENS,
            "vocab_size": 49408,
        },
        dtype=torch.float16,
    ),
}


# ---------------------------------------------------------------------- tokenizer files
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, which CLIP's BPE works on."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = dict(zip(printable, printable)), 0
    for b in range(256):
        if b not in chars:
            chars[b], extra = 256 + extra, extra + 1
    return {b: chr(c) for b, c in sorted(chars.items())}


def bpe_vocabulary(words: list[str] = PROMPT_WORDS) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) of a byte-level BPE in CLIP's layout: bytes, bytes + "</w>", merges, specials.

    The merges are learned as BPE learns them (Sennrich et al. 2016): merge the most frequent
    adjacent pair in all words, repeat until every word is one symbol, so each word of `words`
    tokenizes to a single token and anything else to smaller pieces.
    """
    to_char = bytes_to_unicode()
    byte_chars = list(to_char.values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    spelled = [[to_char[b] for b in w.lower().encode("utf-8")] for w in dict.fromkeys(words)]
    spelled = [symbols[:-1] + [symbols[-1] + "</w>"] for symbols in spelled]
    merges: list[str] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in spelled:
            for pair in zip(symbols, symbols[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # most frequent; ties by name
        merges.append(" ".join(best))
        tokens.append("".join(best))
        for symbols in spelled:
            i = 0
            while i < len(symbols) - 1:
                if (symbols[i], symbols[i + 1]) == best:
                    symbols[i : i + 2] = ["".join(best)]
                i += 1
    tokens += [BOS, EOS]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}, merges


def write_tokenizer_files(folder: Path, words: list[str] = PROMPT_WORDS) -> dict[str, int]:
    """Write vocab.json and merges.txt (with CLIP's "#version" header); returns the vocab."""
    vocab, merges = bpe_vocabulary(words)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab


# ---------------------------------------------------------------------- the pipeline
def text_encoder_config(shape: str, vocab: dict[str, int]):
    """CLIPTextConfig of `shape` whose special token ids are those of `vocab`."""
    from transformers import CLIPTextConfig

    kwargs = {**SHAPES[shape].text_encoder, "vocab_size": SHAPES[shape].text_encoder["vocab_size"] or len(vocab)}
    return CLIPTextConfig(**kwargs, bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])


def build_pipeline(shape: str, tokenizer_dir: Path, seed: int = 0):
    """A StableDiffusionPipeline with random weights of the named shape (fp32, on the CPU)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    spec = SHAPES[shape]
    vocab = write_tokenizer_files(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=MAX_TOKENS)
    torch.manual_seed(seed)
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**spec.vae),
        text_encoder=CLIPTextModel(text_encoder_config(shape, vocab)),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**spec.unet),
        scheduler=PNDMScheduler(**spec.scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# ---------------------------------------------------------------------- a random CLIP (bench --clip tests)
# `tiny-clip` writes what `CLIPModel.save_pretrained` and `CLIPProcessor.save_pretrained` write
# (config.json, model.safetensors, the processor and tokenizer files), laid out as a hub CLIP
# repository is (vocab.json and merges.txt at the top), so `--clip FOLDER` loads it exactly as it
# loads openai/clip-vit-base-patch32 saved to a folder: text and vision transformers of width 32
# and 2 layers, 16-dimensional projections, 32² images in 8² patches, the tokenizer above (any text
# tokenizes). Its numbers mean nothing: random weights rank prompts at random.

CLIP_SHAPES: dict[str, dict[str, Any]] = {
    "tiny-clip": {
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                 "max_position_embeddings": MAX_TOKENS},
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                   "image_size": 32, "patch_size": 8},
        "projection_dim": 16,
    },
}


def build_clip(folder: Path, shape: str = "tiny-clip", seed: int = 0) -> Path:
    """Write a random-weight CLIP model of `shape` and its processor into `folder` (fp32)."""
    from ..bench.clip_model import quiet_transformers

    spec = CLIP_SHAPES[shape]
    folder = Path(folder)
    vocab = write_tokenizer_files(folder)  # vocab.json, merges.txt
    special = {"vocab_size": len(vocab), "bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS], "pad_token_id": vocab[EOS]}
    size = spec["vision"]["image_size"]
    with quiet_transformers():
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_TOKENS)
        config = CLIPConfig(text_config={**spec["text"], **special}, vision_config=spec["vision"], projection_dim=spec["projection_dim"])
        image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        torch.manual_seed(seed)
        CLIPModel(config).save_pretrained(folder, safe_serialization=True)
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def make_model(shape: str, out: str | os.PathLike, seed: int = 0, force: bool = False) -> Path:
    """Write a random-weight SD folder of `shape` to `out` (built beside it, then renamed into place).

    A shape of CLIP_SHAPES (`tiny-clip`) writes a CLIP folder instead, the same way."""
    if shape not in SHAPES and shape not in CLIP_SHAPES:
        raise ValueError(f"shape: must be one of {', '.join([*SHAPES, *CLIP_SHAPES])}, got {shape!r}")
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ValueError(f"out: {out} exists and is not empty; choose another folder or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the model folder is not
        if shape in CLIP_SHAPES:
            build_clip(staging, shape, seed)
        else:
            pipeline = build_pipeline(shape, staging / "tokenizer", seed)
            if SHAPES[shape].dtype == torch.float16:
                for module in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
                    module.half()  # not pipeline.to(dtype): diffusers warns about that, needlessly here
            pipeline.save_pretrained(staging, safe_serialization=True)
            write_tokenizer_files(staging / "tokenizer")  # ours, whatever save_pretrained wrote beside them
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def parameter_counts(shape: str) -> dict[str, int]:
    """Parameters of each network of `shape`, built on the meta device (no memory, no init)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    spec = SHAPES[shape]
    with torch.device("meta"):
        models = {
            "unet": UNet2DConditionModel(**spec.unet),
            "vae": AutoencoderKL(**spec.vae),
            "text_encoder": CLIPTextModel(text_encoder_config(shape, bpe_vocabulary()[0])),
        }
    return {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}
