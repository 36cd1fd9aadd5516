"""--model-path hf:ORG/NAME[@REV] and `cfbench weights fetch MODEL` against a Hugging Face cache folder laid out
as huggingface_hub lays it out (models--ORG--NAME/refs, snapshots/COMMIT), offline: nothing is downloaded."""

from __future__ import annotations

import pytest

from cfbench.api.registry import get_model_class, resolve_model_path
from cfbench.core import hub
from cfbench.core.errors import WeightsNotFoundError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    repo = cache / "models--StanfordAIMI--roent-gen-v1-0"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    (snapshot / "unet").mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (snapshot / "unet" / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


def test_hub_specs_resolve_from_the_cache_only(hub_cache):
    roentgen = get_model_class("roentgen")
    assert resolve_model_path(roentgen, "hf:StanfordAIMI/roent-gen-v1-0") == hub_cache
    assert resolve_model_path(roentgen, f"hf:StanfordAIMI/roent-gen-v1-0@{COMMIT}") == hub_cache
    with pytest.raises(WeightsNotFoundError, match="cfbench weights fetch roentgen"):
        resolve_model_path(roentgen, "hf:StanfordAIMI/roent-gen-v1-0@other-branch")
    with pytest.raises(WeightsNotFoundError, match="models--IrohXu--stable-diffusion"):
        resolve_model_path(get_model_class("pie"), "hf:IrohXu/stable-diffusion-mimic-cxr-v0.1")
    with pytest.raises(hub.HubSpecError):
        hub.parse_hub_spec("hf:no-organisation")
    assert str(hub.parse_hub_spec("hf:a/b@v1")) == "hf:a/b@v1"


def test_weights_fetch_model_is_offline_with_hf_hub_offline(hub_cache, capsys):
    from cfbench.cli import main

    assert main(["weights", "fetch", "roentgen"]) == 0
    assert str(hub_cache) in capsys.readouterr().out
    assert main(["weights", "fetch", "pie"]) != 0  # not cached, and offline: an error naming the repository
    assert main(["weights", "fetch", "biomedjourney"]) != 0  # no public weights
    assert get_model_class("radedit").hub_repos == ("microsoft/radedit", "stabilityai/sdxl-vae",
                                                    "microsoft/BiomedVLP-BioViL-T")
