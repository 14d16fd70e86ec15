"""backend/guidance/stable_diffusion.py on a tiny random-weight pipeline built into a temporary folder."""

import shutil

import pytest
import torch
from host_reads import HostReads

from backend import cli, wording
from backend.cameras import make_cameras
from backend.config import ConfigError, GenerationConfig
from backend.errors import TrainingError
from backend.guidance import View
from backend.guidance.make_model import make_model
from backend.guidance.stable_diffusion import (
    build_sd_guidance,
    eps_from_prediction,
    resolve_dtype,
    resolve_model_folder,
    view_suffix,
)
from backend.renderer import RenderSettings
from backend.trainer import Trainer

CPU = torch.device("cpu")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return make_model("tiny", tmp_path_factory.mktemp("sd") / "tiny")


def sd_config(model, **changes) -> GenerationConfig:
    values = {"prompt": "a red cube", "guidance": "sd", "model": str(model), "device": "cpu", "negative_prompt": "blurry"}
    return GenerationConfig.from_dict({**values, **changes}).validate()


@pytest.fixture(scope="module")
def guidance(tiny_model):
    return build_sd_guidance(sd_config(tiny_model), CPU)


def cameras_at(elevations, azimuths):
    n = len(elevations)
    return make_cameras(torch.tensor(elevations, dtype=torch.float32), torch.tensor(azimuths, dtype=torch.float32), torch.full((n,), 2.4),
                        torch.full((n,), 45.0))


# ---------------------------------------------------------------------- loading
def test_local_folder_goes_through_local_files_only(tiny_model, monkeypatch):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    calls = []
    for cls in (UNet2DConditionModel, AutoencoderKL, DDPMScheduler, CLIPTextModel, CLIPTokenizer):
        original = cls.from_pretrained

        def recording(klass, *args, _original=original, **kwargs):
            calls.append((klass.__name__, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(recording))
    build_sd_guidance(sd_config(tiny_model), CPU)
    expected = ["UNet2DConditionModel", "AutoencoderKL", "DDPMScheduler", "CLIPTextModel", "CLIPTokenizer"]
    assert sorted(name for name, _ in calls) == sorted(expected)
    assert all(kwargs.get("local_files_only") is True for _, kwargs in calls), calls


def test_hub_id_not_cached_while_offline_is_one_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TrainingError, match="not in the Hugging Face cache") as info:
        resolve_model_folder("dreamtime-tests/no-such-model")
    assert info.value.code == "model_offline" and "--model DIR" in wording.cli(info.value.hint)
    assert "and use Preferences › Model: DIR." in wording.panel(info.value.hint)  # the artist's words for the same hint


def test_missing_folder_and_wrong_layout(tmp_path, tiny_model):
    with pytest.raises(TrainingError, match="no model folder") as info:
        build_sd_guidance(sd_config(tmp_path / "nowhere"), CPU)
    assert info.value.code == "model_not_found"
    with pytest.raises(TrainingError, match="no model_index.json") as info:
        build_sd_guidance(sd_config(tmp_path), CPU)
    assert info.value.code == "model_layout" and "make-model" in info.value.hint
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(tiny_model / "model_index.json", partial)
    with pytest.raises(TrainingError, match="lacks unet/, vae/"):
        build_sd_guidance(sd_config(partial), CPU)
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"\0")
    with pytest.raises(TrainingError, match="single file") as info:
        build_sd_guidance(sd_config(single), CPU)
    assert "from_single_file" in info.value.hint


def test_truncated_weights_are_reported_by_component(tmp_path, tiny_model):
    broken = shutil.copytree(tiny_model, tmp_path / "broken")
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(TrainingError, match="cannot load the unet") as info:
        build_sd_guidance(sd_config(broken), CPU)
    assert info.value.code == "model_corrupt"


def test_safetensors_only_refuses_pickled_weights(tmp_path, tiny_model):
    from diffusers import UNet2DConditionModel

    pickled = shutil.copytree(tiny_model, tmp_path / "pickled")
    unet = UNet2DConditionModel.from_pretrained(pickled / "unet")
    for weights in (pickled / "unet").glob("*.safetensors"):
        weights.unlink()
    unet.save_pretrained(pickled / "unet", safe_serialization=False)  # diffusion_pytorch_model.bin: unpickled on load
    assert list((pickled / "unet").glob("*.bin"))
    with pytest.raises(TrainingError, match="no safetensors weights") as info:
        build_sd_guidance(sd_config(pickled, weights="safetensors"), CPU)
    assert info.value.code == "model_weights" and "--allow-pickle-weights" in info.value.hint
    assert build_sd_guidance(sd_config(pickled), CPU).alphas_cumprod.shape == (1000,)  # weights "any": the local default
    build_sd_guidance(sd_config(tiny_model, weights="safetensors"), CPU)  # a safetensors model loads as before


def test_a_hub_prefix_is_never_a_local_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dreamtime-tests" / "local").mkdir(parents=True)  # a folder named like the hub id, in the working directory
    with pytest.raises(TrainingError, match="not in the Hugging Face cache") as info:
        resolve_model_folder("hub:dreamtime-tests/local")
    assert info.value.code == "model_offline" and resolve_model_folder("dreamtime-tests/local").name == "local"
    with pytest.raises(TrainingError, match="not a hub id"):
        resolve_model_folder("hub:../x")


def test_precisions():
    with pytest.raises(ConfigError, match="precision: fp16 needs a GPU .* bf16"):
        resolve_dtype("fp16", CPU)
    assert resolve_dtype("auto", CPU) == torch.float32 and resolve_dtype("bf16", CPU) == torch.bfloat16
    for gpu in ("cuda", "mps"):  # an Apple GPU runs SD in fp16 too
        assert resolve_dtype("auto", torch.device(gpu)) == torch.float16 == resolve_dtype("fp16", torch.device(gpu))
        assert resolve_dtype("bf16", torch.device(gpu)) == torch.bfloat16 and resolve_dtype("fp32", torch.device(gpu)) == torch.float32


def test_bf16_runs_the_half_precision_path_on_the_cpu(tiny_model, tmp_path):
    """The UNet and VAE in bf16, the loss and its gradient in fp32: a dtype mistake here fails in CI, not on the first GPU."""
    config = sd_config(tiny_model, precision="bf16", resolution=32, samples_per_ray=16, encoding="dense", dense_resolution=16, steps=3,
                       albedo_warmup=0.0, textureless_prob=1.0, albedo_prob=0.0)  # normals on every step
    trainer = Trainer(config, tmp_path)
    try:
        trainer.setup(resume=False)
        networks = (trainer.guidance.unet, trainer.guidance.vae)
        assert {p.dtype for net in networks for p in net.parameters()} == {torch.bfloat16}
        assert trainer.guidance.cond.dtype == torch.bfloat16
        before = trainer.field.encoding.grid.detach().clone()
        losses = [trainer.train_step(0)]
        with HostReads() as reads:  # a queued step: the VAE's latent sample, view indices and noise stay on the device
            losses.append(trainer.queue_step(1).tolist()[0])
    finally:
        trainer.close()
    assert dict(reads.ops) == {"aten._local_scalar_dense": 1}  # the shading mode, drawn from the host's own generator
    assert all(loss is not None and loss > 0 for loss in losses)
    assert trainer.field.encoding.grid.dtype == torch.float32 and not torch.equal(trainer.field.encoding.grid, before)
    assert trainer.metrics["guidance_non_finite"] == []


def test_channels_last_and_a_compiled_unet_are_options_that_change_no_number(tiny_model, guidance):
    """channels-last and torch.compile (here its 'eager' backend: the same graph capture, no compiler) are measured options."""
    assert guidance.memory_format == torch.contiguous_format and guidance.unet_forward is guidance.unet  # neither by default
    other = build_sd_guidance(sd_config(tiny_model, extra={"channels_last": True, "compile_unet": "eager"}), CPU)
    assert other.memory_format == torch.channels_last and type(other.unet_forward).__name__ == "OptimizedModule"
    assert other.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    z_t, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5)), torch.tensor([400])
    cond = guidance.text_embeddings(cameras_at([0], [0]))
    torch.testing.assert_close(other.eps_hat(z_t, t, cond), guidance.eps_hat(z_t, t, cond), rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------- prompts
@pytest.mark.parametrize(
    "elevation, azimuth, expected",
    [
        (0, 0, "front"), (20, 44, "front"), (20, -44, "front"), (0, 360, "front"),
        (0, 45, "side"), (0, 90, "side"), (10, -90, "side"), (0, 135, "side"),
        (0, 136, "back"), (0, 180, "back"), (0, -170, "back"), (0, 200, "back"),
        (60, 0, "front"), (61, 0, "overhead"), (85, 180, "overhead"),
    ],
)
def test_view_suffix(elevation, azimuth, expected):
    assert view_suffix(elevation, azimuth) == f"{expected} view"


def test_embeddings_per_view_and_negative_prompt(guidance, tiny_model):
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_model, subfolder="tokenizer", local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(tiny_model, subfolder="text_encoder", local_files_only=True)

    def embed(text):
        ids = tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
        return encoder(ids)[0][0]

    assert guidance.prompts[2] == "a red cube, back view"
    cond = guidance.text_embeddings(cameras_at([10, 10, 70], [170, 0, 0]))  # back, front, overhead
    for row, text in zip(cond, ("a red cube, back view", "a red cube, front view", "a red cube, overhead view")):
        assert torch.allclose(row, embed(text), atol=1e-5)
    assert torch.allclose(guidance.uncond[0], embed("blurry"), atol=1e-5)


# ---------------------------------------------------------------------- the SDS gradient
def test_cfg_is_applied_to_one_batched_unet_call(guidance, monkeypatch):
    torch.manual_seed(0)
    z_t, t = torch.randn(2, 4, 16, 16), torch.tensor([300, 700])
    cond = guidance.text_embeddings(cameras_at([0, 0], [0, 180]))
    with torch.no_grad():
        eps_u = guidance.unet(z_t, t, encoder_hidden_states=guidance.uncond.expand(2, -1, -1)).sample
        eps_c = guidance.unet(z_t, t, encoder_hidden_states=cond).sample
    for scale in (1.0, 7.5, 100.0):
        monkeypatch.setattr(guidance, "guidance_scale", scale)
        assert torch.allclose(guidance.eps_hat(z_t, t, cond), eps_u + scale * (eps_c - eps_u), atol=1e-4 * scale)


def test_gradient_reaching_latents_is_w_t_times_eps_hat_minus_eps(guidance, monkeypatch):
    """The render (16², resized to the model's 32²) -> latents z; dL/dz = w(t) (eps_hat - eps) / B."""
    captured = {}
    encode = guidance.encode

    def capturing_encode(rgb, generator=None):
        captured["z"] = encode(rgb, generator)
        captured["z"].retain_grad()
        return captured["z"]

    monkeypatch.setattr(guidance, "encode", capturing_encode)
    rgb = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    cameras = cameras_at([10, 30], [0, 100])  # front, side
    t = torch.tensor([250, 800])
    view = View(cameras, RenderSettings(), 16, 16, torch.Generator().manual_seed(7))
    guidance.losses(rgb, t, view)["sds"].backward()

    # By hand, on the same noise: replay the step's generator.
    generator = torch.Generator().manual_seed(7)
    x = torch.nn.functional.interpolate(rgb.detach().permute(0, 3, 1, 2), (32, 32), mode="bilinear") * 2 - 1
    with torch.no_grad():
        z = guidance.vae.encode(x).latent_dist.sample(generator) * guidance.vae.config.scaling_factor
        eps = torch.randn(z.shape, generator=generator)
        abar = guidance.alphas_cumprod[t].view(2, 1, 1, 1)
        z_t = abar.sqrt() * z + (1 - abar).sqrt() * eps
        cond = torch.stack([guidance.cond[0], guidance.cond[1]])  # front, side
        eps_u = guidance.unet(z_t, t, encoder_hidden_states=guidance.uncond.expand(2, -1, -1)).sample
        eps_c = guidance.unet(z_t, t, encoder_hidden_states=cond).sample
    expected = (1 - abar) * (eps_u + 100.0 * (eps_c - eps_u) - eps)
    assert torch.allclose(captured["z"].detach(), z, atol=1e-5)
    assert torch.allclose(captured["z"].grad * 2, expected, rtol=1e-3, atol=1e-3 * expected.abs().max())
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_low_vram_gives_the_same_gradient(tiny_model, guidance):
    """Sliced attention and a checkpointed VAE encoder change memory, not the result."""
    low = build_sd_guidance(sd_config(tiny_model, low_vram=True), CPU)
    cameras, t = cameras_at([10], [60]), torch.tensor([500])
    grads = []
    for g in (guidance, low):
        rgb = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
        g.losses(rgb, t, View(cameras, RenderSettings(), 32, 16, torch.Generator().manual_seed(3)))["sds"].backward()
        grads.append(rgb.grad)
    assert low.vae.encoder.gradient_checkpointing
    assert all(type(p).__name__ == "SlicedAttnProcessor" for p in low.unet.attn_processors.values())
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-4 * grads[0].abs().max())


def test_v_prediction_and_sample_give_back_eps():
    torch.manual_seed(0)
    x0, eps, abar = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([[0.9], [0.5], [0.05]])
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    v = abar.sqrt() * eps - (1 - abar).sqrt() * x0
    assert torch.allclose(eps_from_prediction(v, x_t, abar, "v_prediction"), eps, atol=1e-5)
    assert torch.allclose(eps_from_prediction(x0, x_t, abar, "sample"), eps, atol=1e-4)
    assert torch.equal(eps_from_prediction(eps, x_t, abar, "epsilon"), eps)


# ---------------------------------------------------------------------- through the trainer
def test_one_training_step_changes_the_field(tiny_model, tmp_path):
    config = sd_config(tiny_model, resolution=32, samples_per_ray=16, encoding="dense", dense_resolution=32, steps=4)
    trainer = Trainer(config, tmp_path)
    try:
        trainer.setup(resume=False)
        before = [p.detach().clone() for p in trainer.field.parameters()]
        loss = trainer.train_step(0)
    finally:
        trainer.close()
    assert loss is not None and loss > 0
    changed = [not torch.equal(b, p) for b, p in zip(before, trainer.field.parameters())]
    assert any(changed)


def test_generate_sd_20_steps_writes_previews_and_mesh(tiny_model, tmp_path, capsys, monkeypatch):
    from backend.config import CPU_PRESET

    # The CPU preset with a 32³ voxel grid instead of 96³: the same code, a few times faster
    # (generate has no --dense-resolution flag).
    monkeypatch.setattr(cli, "preset_for", lambda device: {**CPU_PRESET, "dense_resolution": 32})
    run_dir = tmp_path / "run"
    argv = ["generate", "a red cube", "--guidance", "sd", "--model", str(tiny_model), "--device", "cpu", "--resolution", "32", "--steps",
            "20"]
    argv += ["--preview-every", "10", "--mesh-resolution", "48", "--texture-size", "256", "--encoding", "dense", "--samples-per-ray", "16"]
    argv += ["--preview-resolution", "32", "--run-dir", str(run_dir), "--quiet"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == str(run_dir)
    assert (run_dir / "previews" / "step_00010.png").is_file() and (run_dir / "previews" / "step_00020.png").is_file()
    assert (run_dir / "mesh.glb").stat().st_size > 0
    assert (run_dir / "checkpoint.pt").is_file()
