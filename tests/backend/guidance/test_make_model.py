"""backend/guidance/make_model.py: random-weight SD folders that diffusers loads as it loads a real one."""

import json
import time

import numpy as np
import pytest

from backend import cli
from backend.guidance.make_model import BOS, EOS, PROMPT_WORDS, bpe_vocabulary, make_model, parameter_counts
from backend.schedule import scaled_linear_alphas_cumprod


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return make_model("tiny", tmp_path_factory.mktemp("sd") / "tiny")


def test_tiny_folder_loads_with_diffusers_offline(tiny_model):
    from diffusers import StableDiffusionPipeline

    for name in ("model_index.json", "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"):
        assert (tiny_model / name).is_file(), name
    tick = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    load_s = time.perf_counter() - tick
    assert load_s < 10  # ~0.3 s unloaded; generous for a shared CPU
    n_unet = sum(p.numel() for p in pipe.unet.parameters())
    assert 0.5e6 < n_unet < 1.5e6
    image = pipe("a red cube", num_inference_steps=1, height=32, width=32, output_type="np").images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()


def test_scheduler_is_sds_table(tiny_model):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_pretrained(tiny_model, subfolder="scheduler", local_files_only=True)
    assert np.allclose(scheduler.alphas_cumprod.numpy(), scaled_linear_alphas_cumprod(), rtol=1e-5)


def test_tokenizer_spells_prompt_words_as_single_tokens(tiny_model):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_model, subfolder="tokenizer", local_files_only=True)
    vocab = json.loads((tiny_model / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    for word in ("hamburger", "overhead", "view", "red", "cube", "photo"):
        ids = tokenizer(word).input_ids
        assert tokenizer.convert_ids_to_tokens(ids) == [BOS, word + "</w>", EOS]
    ids = tokenizer("a zebra über 42!").input_ids  # unknown words fall back to pieces, never to unk
    assert ids[0] == vocab[BOS] and ids[-1] == vocab[EOS] and vocab[EOS] not in ids[1:-1]
    assert tokenizer.model_max_length == 77


def test_bpe_vocabulary_layout():
    vocab, merges = bpe_vocabulary()
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert vocab[BOS] == len(vocab) - 2 and vocab[EOS] == len(vocab) - 1  # specials last, as CLIP
    assert all(a + b in vocab for a, b in (m.split(" ") for m in merges))
    assert all(w + "</w>" in vocab for w in PROMPT_WORDS)


def test_sd21_base_has_the_real_shapes():
    counts = parameter_counts("sd21-base")  # meta device: no memory, no init
    assert counts == {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}


def test_out_must_be_new_or_empty(tmp_path, tiny_model):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        make_model("tiny", tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="shape"):
        make_model("huge", tmp_path / "new")


def test_cli_make_model(tmp_path, capsys):
    out = tmp_path / "model"
    assert cli.main(["make-model", "--shape", "tiny", "--out", str(out), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left behind
    assert cli.main(["make-model", "--out", str(out)]) == 2  # not empty: one line, exit 2
    assert "not empty" in capsys.readouterr().err


def test_tiny_clip_folder_loads_like_a_hub_clip_and_embeds(tmp_path):
    import torch

    from backend.bench.clip_model import ClipEmbedder

    folder = make_model("tiny-clip", tmp_path / "clip")
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json", "processor_config.json"):
        assert (folder / name).is_file(), name
    clip = ClipEmbedder(str(folder))  # CLIPModel + CLIPProcessor, local_files_only
    texts = clip.text(["a ceramic coffee mug", "a zebra über 42!"])
    images = clip.images(torch.rand(3, 24, 40, 3))  # any size: the processor resizes and crops
    assert texts.shape == (2, 16) and images.shape == (3, 16)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5) and np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert not np.allclose(texts[0], texts[1])
