"""LDM checkpoint -> diffusers folder conversion, round-tripped through tiny networks.

The test helper below writes a tiny diffusers pipeline back in the original latent-diffusion key names
(the layout of the official InstructPix2Pix ``.ckpt``), independently of diffusers' own tables; the
conversion under test then maps it forward with diffusers' single-file utilities, and the result must
equal the pipeline we started from, tensor for tensor and output for output.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from cfbench.training.ldm_convert import (
    LdmCheckpointError,
    convert_ldm_checkpoint,
    read_checkpoint_file,
)
from tests.helpers.tiny_diffusion import save_tiny_instruct_pix2pix, save_tiny_stable_diffusion

# ------------------------------------------------------------------ diffusers -> LDM key names (test helper)

_RESNET_UNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_first(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def unet_to_ldm(state: dict, layers_per_block: int) -> dict:
    """A diffusers UNet2DConditionModel state dict in LDM names (``model.diffusion_model.*``)."""
    per_down, per_up = layers_per_block + 1, layers_per_block + 1
    simple = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    ldm = {}
    for key, tensor in state.items():
        name = None
        for old, new in simple.items():
            if key.startswith(old + "."):
                name = new + key[len(old):]
        if match := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            block, layer, rest = int(match[1]), int(match[2]), match[3]
            name = f"input_blocks.{1 + block * per_down + layer}.0.{_rename_first(rest, _RESNET_UNET)}"
        elif match := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            block, layer, rest = int(match[1]), int(match[2]), match[3]
            name = f"input_blocks.{1 + block * per_down + layer}.1.{rest}"
        elif match := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            block, rest = int(match[1]), match[2]
            name = f"input_blocks.{1 + block * per_down + layers_per_block}.0.op.{rest}"
        elif match := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            name = f"middle_block.{2 * int(match[1])}.{_rename_first(match[2], _RESNET_UNET)}"
        elif match := re.match(r"mid_block\.attentions\.0\.(.+)", key):
            name = f"middle_block.1.{match[1]}"
        elif match := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            block, layer, rest = int(match[1]), int(match[2]), match[3]
            name = f"output_blocks.{block * per_up + layer}.0.{_rename_first(rest, _RESNET_UNET)}"
        elif match := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            block, layer, rest = int(match[1]), int(match[2]), match[3]
            name = f"output_blocks.{block * per_up + layer}.1.{rest}"
        elif match := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            block, rest = int(match[1]), match[2]
            has_attention = any(k.startswith(f"up_blocks.{block}.attentions.") for k in state)
            name = f"output_blocks.{block * per_up + layers_per_block}.{2 if has_attention else 1}.conv.{rest}"
        assert name is not None, f"no LDM name for UNet key {key}"
        ldm["model.diffusion_model." + name] = tensor.clone()
    return ldm


def vae_to_ldm(state: dict, n_blocks: int) -> dict:
    """A diffusers AutoencoderKL state dict in LDM names (``first_stage_model.*``); attention projections
    become 1x1 convolutions as in the original."""
    ldm = {}
    for key, tensor in state.items():
        name = key.replace("conv_norm_out", "norm_out")
        if match := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            name = f"encoder.down.{match[1]}.block.{match[2]}.{match[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif match := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            name = f"encoder.down.{match[1]}.downsample.conv.{match[2]}"
        elif match := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            level = n_blocks - 1 - int(match[1])
            name = f"decoder.up.{level}.block.{match[2]}.{match[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif match := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            name = f"decoder.up.{n_blocks - 1 - int(match[1])}.upsample.conv.{match[2]}"
        elif match := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            name = f"{match[1]}.mid.block_{int(match[2]) + 1}.{match[3]}"
        elif match := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            name = f"{match[1]}.mid.attn_1.{_rename_first(match[2], _VAE_ATTENTION)}"
            if tensor.ndim == 2:
                tensor = tensor[:, :, None, None]
        ldm["first_stage_model." + name] = tensor.clone()
    return ldm


def clip_to_ldm(state: dict) -> dict:
    """A transformers CLIPTextModel state dict in LDM names (``cond_stage_model.transformer.text_model.*``)."""
    ldm = {}
    for key, tensor in state.items():
        inner = key if key.startswith("text_model.") else "text_model." + key
        ldm["cond_stage_model.transformer." + inner] = tensor.clone()
    return ldm


def pipeline_to_ldm(pipeline) -> dict:
    state = unet_to_ldm(pipeline.unet.state_dict(), pipeline.unet.config.layers_per_block)
    state.update(vae_to_ldm(pipeline.vae.state_dict(), len(pipeline.vae.config.block_out_channels)))
    state.update(clip_to_ldm(pipeline.text_encoder.state_dict()))
    state["alphas_cumprod"] = torch.linspace(0.999, 0.01, 1000)  # other LDM tensors are ignored
    return state


# --------------------------------------------------------------------------------------------- tests


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class NotATensor:
    """Stands for the Python objects Lightning stores in checkpoints (callbacks, hyper-parameters)."""


@pytest.fixture(scope="module")
def tiny_ldm(tmp_path_factory):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    root = tmp_path_factory.mktemp("ldm")
    folder = save_tiny_instruct_pix2pix(root / "ip2p")
    pipeline = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, safety_checker=None)
    state = pipeline_to_ldm(pipeline)
    ema = {}
    for key, tensor in state.items():
        if key.startswith("model.diffusion_model."):
            ema["model_ema." + "".join(key[len("model."):].split("."))] = tensor + 0.5
    ema["model_ema.num_updates"] = torch.tensor(1000)
    ckpt = root / "tiny-ip2p.ckpt"
    torch.save({"state_dict": {**state, **ema}, "global_step": 22000}, ckpt)
    return {"root": root, "folder": folder, "pipeline": pipeline, "state": state, "ckpt": ckpt}


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def _edit(pipeline) -> np.ndarray:
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return pipeline("Add the finding of left pleural effusion", image=image, num_inference_steps=2,
                    generator=torch.Generator().manual_seed(1), output_type="np").images


def test_round_trip_raw_weights_equal_the_original_pipeline(tiny_ldm):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    out = tiny_ldm["root"] / "raw"
    summary = convert_ldm_checkpoint(tiny_ldm["ckpt"], tiny_ldm["folder"], out, weights="raw")
    assert summary["pipeline"] == "StableDiffusionInstructPix2PixPipeline" and summary["unet_weights"] == "raw"
    converted = StableDiffusionInstructPix2PixPipeline.from_pretrained(out, safety_checker=None)
    original = tiny_ldm["pipeline"]
    for part in ("unet", "vae", "text_encoder"):
        _assert_same_weights(getattr(converted, part), getattr(original, part))
    np.testing.assert_array_equal(_edit(converted), _edit(original))
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "StableDiffusionInstructPix2PixPipeline"


def test_ema_weights_are_taken_when_present(tiny_ldm):
    from diffusers import UNet2DConditionModel

    out = tiny_ldm["root"] / "ema"
    summary = convert_ldm_checkpoint(tiny_ldm["ckpt"], tiny_ldm["folder"], out)  # weights="auto"
    assert summary["unet_weights"] == "ema"
    unet = UNet2DConditionModel.from_pretrained(out, subfolder="unet")
    for name, tensor in tiny_ldm["pipeline"].unet.state_dict().items():
        torch.testing.assert_close(unet.state_dict()[name], tensor + 0.5, rtol=0, atol=0)


def test_safetensors_stable_diffusion_checkpoint_converts_to_a_text_to_image_folder(tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    folder = save_tiny_stable_diffusion(tmp_path / "sd")
    original = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    path = tmp_path / "tiny-sd.safetensors"
    save_file(pipeline_to_ldm(original), path)
    summary = convert_ldm_checkpoint(path, folder, tmp_path / "converted")
    assert summary == {**summary, "pipeline": "StableDiffusionPipeline", "unet_in_channels": 4, "unet_weights": "raw"}
    converted = StableDiffusionPipeline.from_pretrained(tmp_path / "converted", safety_checker=None)
    _assert_same_weights(converted.unet, original.unet)
    with pytest.raises(LdmCheckpointError, match="no EMA copy"):
        convert_ldm_checkpoint(path, folder, tmp_path / "again", weights="ema")


def test_a_diffusers_state_dict_is_refused_with_a_clear_error(tiny_ldm, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_ldm["pipeline"].unet.state_dict().items()}, path)
    with pytest.raises(LdmCheckpointError, match=r"unet.safetensors is not a complete LDM .*diffusers state dict"):
        convert_ldm_checkpoint(path, tiny_ldm["folder"], tmp_path / "out")
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(LdmCheckpointError, match="notes.ckpt"):
        convert_ldm_checkpoint(not_a_checkpoint, tiny_ldm["folder"], tmp_path / "out")


def test_config_folder_of_another_architecture_is_refused(tiny_ldm, tmp_path):
    sd_folder = save_tiny_stable_diffusion(tmp_path / "sd")
    with pytest.raises(LdmCheckpointError, match="8 input channels .*in_channels=4"):
        convert_ldm_checkpoint(tiny_ldm["ckpt"], sd_folder, tmp_path / "out")
    with pytest.raises(LdmCheckpointError, match="lacks unet/config.json"):
        convert_ldm_checkpoint(tiny_ldm["ckpt"], tmp_path, tmp_path / "out")


def test_pickled_python_objects_need_explicit_permission(tiny_ldm, tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": tiny_ldm["state"], "callbacks": NotATensor()}, path)
    with pytest.raises(LdmCheckpointError, match="--allow-pickle"):
        read_checkpoint_file(path)
    assert read_checkpoint_file(path, allow_pickle=True).keys() == tiny_ldm["state"].keys()


def test_cli_convert_ckpt(tiny_ldm, tmp_path, capsys):
    from cfbench.cli import main

    out = tmp_path / "cli"
    assert main(["convert-ckpt", str(tiny_ldm["ckpt"]), "--config", str(tiny_ldm["folder"]), "--out", str(out),
                 "--weights", "raw"]) == 0
    assert (out / "unet" / "config.json").is_file()
    assert "StableDiffusionInstructPix2PixPipeline" in capsys.readouterr().out
    assert main(["convert-ckpt", str(tmp_path / "missing.ckpt"), "--config", str(tiny_ldm["folder"]),
                 "--out", str(tmp_path / "x")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
