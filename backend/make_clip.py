"""A random-weight CLIP folder, for tests of the bench's CLIP scores without downloaded weights.

`build_clip(folder)` writes what `CLIPModel.save_pretrained` and `CLIPProcessor.save_pretrained`
write (config.json, model.safetensors, the processor and tokenizer files), laid out as a hub CLIP
repository is (vocab.json and merges.txt at the top), so `--clip FOLDER` loads it exactly as it
loads openai/clip-vit-base-patch32 saved to a folder. `make-model --shape tiny-clip` calls it.

`tiny-clip`: text and vision transformers of width 32 and 2 layers, 16-dimensional projections,
32² images in 8² patches; the tokenizer is make_model's byte-level BPE (any text tokenizes).
Its numbers mean nothing: random weights rank prompts at random.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .make_model import BOS, EOS, MAX_TOKENS, write_tokenizer_files

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
    from .clip_model import quiet_transformers

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
