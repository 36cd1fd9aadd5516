"""Weights folders (issue 22, mechanism 5): cfbench checks model_index.json before anything it names is
imported, and a tensor of the wrong shape is named with its file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from cfbench.core.errors import WeightsFolderError
from cfbench.diffusion.components import check_model_index, load_diffusion_components
from tests.helpers.tiny_diffusion import save_tiny_instruct_pix2pix

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PIPELINE = "StableDiffusionInstructPix2PixPipeline"


@pytest.fixture(scope="module")
def tiny_original(tmp_path_factory):
    return save_tiny_instruct_pix2pix(tmp_path_factory.mktemp("tiny") / "pipeline")


@pytest.fixture
def tiny_folder(tiny_original, tmp_path):
    import shutil

    return Path(shutil.copytree(tiny_original, tmp_path / "pipeline"))


@pytest.mark.parametrize("entry", [["planted_module", "Payload"], ["os", "system"], ["diffusers", "../x"],
                                   ["transformers", "AutoModel"], ["diffusers"], "diffusers"])
def test_a_model_index_naming_an_unknown_library_or_class_is_refused_before_any_import(
        tiny_folder, tmp_path, monkeypatch, entry):
    marker = tmp_path / "imported"
    (tmp_path / "planted_module.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nclass Payload: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    index_path = tiny_folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["unet"] = entry
    index_path.write_text(json.dumps(index))
    if not isinstance(entry, list):
        assert check_model_index(tiny_folder)["unet"] == entry  # a plain setting, not a component
        return
    with pytest.raises(WeightsFolderError, match=rf"{index_path}: component 'unet' names .* which cfbench does not load"):
        load_diffusion_components(tiny_folder, PIPELINE)
    assert not marker.exists() and "planted_module" not in sys.modules


def test_the_shipped_and_tiny_pipeline_folders_pass_the_check(tiny_folder):
    from cfbench.core.config import PACKAGE_DATA_DIR

    assert check_model_index(tiny_folder)["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert check_model_index(PACKAGE_DATA_DIR / "phantom_instructx2x")["scheduler"] == ["diffusers", "DDIMScheduler"]


def test_a_tensor_of_the_wrong_shape_is_named_with_its_file(tiny_folder):
    from safetensors.torch import load_file, save_file

    weights = next((tiny_folder / "unet").glob("*.safetensors"))
    state = load_file(weights)
    state["conv_in.bias"] = torch.zeros(3, 3)
    save_file(state, weights)
    with pytest.raises(WeightsFolderError) as error:
        load_diffusion_components(tiny_folder, PIPELINE)
    message = str(error.value)
    assert message.startswith(f"{weights}: tensor conv_in.bias has shape torch.Size([3, 3])")
    assert "re-download or re-convert" in message
