"""BiomedCLIPEmbedder on tiny randomly initialised open_clip models saved in the hub layout.

Two tiny models go through ``BiomedCLIPEmbedder.from_folder`` (the same code path as the real files):

- ``timm``: BiomedCLIP's own family -- ``CustomTextCLIP`` with a timm ViT vision tower (a tiny ViT
  registered with timm under ``cfbench_tiny_vit``; ``timm_pool=""``, ``timm_proj="linear"`` as in
  BiomedCLIP) and a Hugging Face BERT text tower (``cls_last_hidden_state_pooler``, ``mlp`` projection).
  The text tower is built from a local tiny BertConfig, but the saved config names the real PubMedBERT
  hub model: loading never builds the text tower (``AutoConfig.from_pretrained`` is made to fail).
- ``native``: an open_clip-native ``CLIP`` (open_clip's VisionTransformer), loadable offline by
  ``open_clip.create_model_and_transforms("local-dir:...")`` too, against which the embeddings and the
  preprocessing are checked.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from cfbench.evaluation.biomedclip import (  # noqa: E402
    CONFIG_NAME,
    HUB_REPO,
    PREPROCESSING_VERSION,
    WEIGHTS_NAME,
    BiomedCLIPEmbedder,
    clip_i,
    open_clip_version,
)

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]  # BiomedCLIP's preprocess_cfg
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
PUBMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
SIZE = 32  # the tiny models' input size
EMBED_DIM = 16


def _register_tiny_timm_vit() -> str:
    timm = pytest.importorskip("timm")
    from timm.models import is_model, register_model
    from timm.models.vision_transformer import _create_vision_transformer

    name = "cfbench_tiny_vit"
    if not is_model(name):
        def cfbench_tiny_vit(pretrained=False, **kwargs):
            args = dict(img_size=SIZE, patch_size=8, embed_dim=32, depth=2, num_heads=2)
            return _create_vision_transformer(name, pretrained=pretrained, **dict(args, **kwargs))

        cfbench_tiny_vit.__module__ = timm.models.vision_transformer.__name__
        register_model(cfbench_tiny_vit)
    return name


def _write_folder(folder, model, model_cfg, preprocess_cfg):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg},
                                                 indent=2), encoding="utf-8")
    torch.save(model.state_dict(), folder / WEIGHTS_NAME)
    return folder


def _timm_model(tmp):
    from transformers import BertConfig

    timm_name = _register_tiny_timm_vit()
    bert = tmp / "tiny-bert"
    BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64).save_pretrained(bert)
    vision_cfg = {"timm_model_name": timm_name, "timm_model_pretrained": False, "timm_pool": "",
                  "timm_proj": "linear", "image_size": SIZE}
    text_cfg = {"hf_model_name": str(bert), "hf_tokenizer_name": str(bert), "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 32}
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(embed_dim=EMBED_DIM, vision_cfg=vision_cfg,
                                     text_cfg=dict(text_cfg, hf_model_pretrained=False)).eval()
    # the config on disk names the real PubMedBERT, as BiomedCLIP's does: the loader must not care
    saved_text = dict(text_cfg, hf_model_name=PUBMEDBERT, hf_tokenizer_name=PUBMEDBERT, context_length=256)
    model_cfg = {"embed_dim": EMBED_DIM, "vision_cfg": vision_cfg, "text_cfg": saved_text}
    folder = _write_folder(tmp / "biomedclip-timm", model, model_cfg, {"mean": OPENAI_MEAN, "std": OPENAI_STD})
    return folder, model


def _native_model(tmp, name="biomedclip-native", layers=2, interpolation="bilinear"):
    vision_cfg = {"image_size": SIZE, "patch_size": 8, "width": 32, "layers": layers, "head_width": 16}
    text_cfg = {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}
    torch.manual_seed(1)
    model = open_clip.CLIP(embed_dim=EMBED_DIM, vision_cfg=vision_cfg, text_cfg=text_cfg).eval()
    model_cfg = {"embed_dim": EMBED_DIM, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    preprocess_cfg = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": interpolation}
    return _write_folder(tmp / name, model, model_cfg, preprocess_cfg), model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("biomedclip")
    return {"timm": _timm_model(tmp), "native": _native_model(tmp)}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No hub access, and building a Hugging Face text tower fails loudly; """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError(f"the text tower was built: AutoConfig.from_pretrained{args}")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)


def _images(n, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 0.5 + 0.3 * np.sin(6 * xx + 3 * yy)
    images = np.clip(base[None] + 0.15 * rng.standard_normal((n, size, size)), 0, 1)
    return images.astype(np.float32)


def _hand_embed(model, images, size, mean, std, interpolation):
    x = torch.from_numpy(images)[:, None]
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode=interpolation, antialias=True, align_corners=False).clamp(0, 1)
    x = x.repeat(1, 3, 1, 1)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.encode_image(x, normalize=True).numpy()


@pytest.mark.parametrize("kind", ["timm", "native"])
def test_embeddings_unit_norm_deterministic_batched(models, kind):
    folder, _ = models[kind]
    embedder = BiomedCLIPEmbedder.from_folder(folder, batch_size=3)
    assert embedder.name == "biomedclip" and embedder.outputs == ("embedding",)
    images = _images(7, size=64)
    out = embedder.predict(images)
    assert set(out) == {"embedding"}
    emb = out["embedding"]
    assert emb.shape == (7, EMBED_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb, embedder.predict(images)["embedding"])  # deterministic
    one_by_one = BiomedCLIPEmbedder.from_folder(folder, batch_size=1)
    singles = np.concatenate([one_by_one.predict(images[i:i + 1])["embedding"] for i in range(7)])
    np.testing.assert_allclose(emb, singles, atol=1e-5)
    # identical images -> cosine 1; different images -> not
    pair = embedder.predict(np.stack([images[2], images[2], images[3]]))["embedding"]
    assert clip_i(pair[:1], pair[1:2])[0] == pytest.approx(1.0, abs=1e-6)
    assert clip_i(pair[:1], pair[2:3])[0] < 0.9999
    assert not embedder.visual.training


@pytest.mark.parametrize("kind", ["timm", "native"])
@pytest.mark.parametrize("size", [SIZE, 64, 50])
def test_matches_hand_computation(models, kind, size):
    folder, model = models[kind]
    embedder = BiomedCLIPEmbedder.from_folder(folder)
    cfg = json.loads((folder / CONFIG_NAME).read_text())["preprocess_cfg"]
    interpolation = cfg.get("interpolation", "bicubic")  # open_clip's default, BiomedCLIP's
    assert embedder.preprocess_cfg == {"size": SIZE, "mean": cfg["mean"], "std": cfg["std"],
                                       "interpolation": interpolation, "resize_mode": "shortest"}
    images = _images(4, size=size, seed=size)
    expected = _hand_embed(model, images, SIZE, cfg["mean"], cfg["std"], interpolation)
    np.testing.assert_allclose(embedder.predict(images)["embedding"], expected, atol=1e-5)


def test_matches_open_clip_local_dir_pipeline(models):
    """Against open_clip's own loader and PIL preprocessing (8-bit images at the model's size: no resize)."""
    from PIL import Image

    if not hasattr(open_clip.factory, "LOCAL_DIR_PREFIX"):
        pytest.skip("this open_clip has no 'local-dir:' models")
    folder, _ = models["native"]
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    model.eval()
    images = (np.round(_images(3) * 255) / 255).astype(np.float32)
    pixels = torch.stack([preprocess(Image.fromarray(np.round(image * 255).astype(np.uint8)))
                          for image in images])
    with torch.no_grad():
        expected = model.encode_image(pixels, normalize=True).numpy()
    got = BiomedCLIPEmbedder.from_folder(folder).predict(images)["embedding"]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_identity(models):
    from cfbench.core.hashing import file_sha256

    folder, _ = models["timm"]
    identity = BiomedCLIPEmbedder.from_folder(folder).identity()
    assert identity["evaluator"] == "biomedclip"
    assert identity["weights_sha256"] == file_sha256(folder / WEIGHTS_NAME)
    assert identity["config_sha256"] == file_sha256(folder / CONFIG_NAME)
    assert identity["open_clip"] == open_clip_version()
    if hasattr(open_clip, "__version__"):
        assert identity["open_clip"] == open_clip.__version__
    assert identity["preprocessing"] == PREPROCESSING_VERSION
    json.dumps(identity)


def test_rejects_wrongly_scaled_images(models):
    embedder = BiomedCLIPEmbedder.from_folder(models["native"][0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        embedder.predict(_images(2) * 2 - 1)
    with pytest.raises(ValueError, match="square"):
        embedder.predict(np.zeros((1, 32, 40), np.float32))


def test_missing_folder_and_files(tmp_path, models):
    with pytest.raises(FileNotFoundError, match=HUB_REPO) as info:
        BiomedCLIPEmbedder.from_folder(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
    src, _ = models["native"]
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        folder = tmp_path / f"without-{name}"
        folder.mkdir()
        other = CONFIG_NAME if name == WEIGHTS_NAME else WEIGHTS_NAME
        (folder / other).write_bytes((src / other).read_bytes())
        with pytest.raises(FileNotFoundError, match=HUB_REPO) as info:
            BiomedCLIPEmbedder.from_folder(folder)
        assert str(folder / name) in str(info.value)


def _copy_config(src, folder):
    folder.mkdir()
    (folder / CONFIG_NAME).write_bytes((src / CONFIG_NAME).read_bytes())
    return folder


def test_bad_weights_files(tmp_path, models):
    src, _ = models["timm"]
    garbage = _copy_config(src, tmp_path / "garbage")
    (garbage / WEIGHTS_NAME).write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match="cannot be read") as info:
        BiomedCLIPEmbedder.from_folder(garbage)
    assert str(garbage / WEIGHTS_NAME) in str(info.value)

    no_visual = _copy_config(src, tmp_path / "no-visual")
    torch.save({"text.proj.weight": torch.zeros(2, 2)}, no_visual / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="no 'visual") as info:
        BiomedCLIPEmbedder.from_folder(no_visual)
    assert str(no_visual / WEIGHTS_NAME) in str(info.value)

    # the native model's weights next to the timm config: keys do not match
    wrong = _copy_config(src, tmp_path / "wrong-model")
    (wrong / WEIGHTS_NAME).write_bytes((models["native"][0] / WEIGHTS_NAME).read_bytes())
    with pytest.raises(ValueError, match="do not match the vision tower") as info:
        BiomedCLIPEmbedder.from_folder(wrong)
    assert str(wrong / WEIGHTS_NAME) in str(info.value) and "missing visual.* keys" in str(info.value)


def test_weights_of_a_deeper_model_rejected(tmp_path, models):
    deeper, _ = _native_model(tmp_path, "deeper", layers=3)
    folder = _copy_config(models["native"][0], tmp_path / "mismatch")
    (folder / WEIGHTS_NAME).write_bytes((deeper / WEIGHTS_NAME).read_bytes())
    with pytest.raises(ValueError, match=r"unexpected visual\.\* keys: transformer\.resblocks\.2"):
        BiomedCLIPEmbedder.from_folder(folder)
    # same keys, other shapes: a wider patch embedding
    state = torch.load(models["native"][0] / WEIGHTS_NAME, weights_only=True)
    state["visual.conv1.weight"] = torch.zeros(32, 3, 4, 4)
    torch.save(state, folder / WEIGHTS_NAME)
    with pytest.raises(ValueError, match=r"shape mismatches.*conv1\.weight"):
        BiomedCLIPEmbedder.from_folder(folder)


def test_not_an_open_clip_config(tmp_path, models):
    src, _ = models["native"]
    for name, text in (("hf-config", json.dumps({"architectures": ["BertModel"], "hidden_size": 32})),
                       ("not-json", "{ nope"),
                       ("no-vision", json.dumps({"model_cfg": {"embed_dim": 16, "text_cfg": {}}}))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / CONFIG_NAME).write_text(text)
        (folder / WEIGHTS_NAME).write_bytes((src / WEIGHTS_NAME).read_bytes())
        with pytest.raises(ValueError, match="open_clip config") as info:
            BiomedCLIPEmbedder.from_folder(folder)
        assert str(folder / CONFIG_NAME) in str(info.value)


def test_cli_computes_clip_i_with_a_local_biomedclip_folder(models, random_dataset, tmp_path, capsys):
    import json

    from cfbench.cli import main

    folder = models["timm"][0]
    status = main(["--quiet", "run", "--model", "ground-truth", "--split", "holdout", "--data", str(random_dataset),
                   "--resolution", "32", "--out", str(tmp_path / "run"), "--evaluator", "none",
                   "--clip-model", str(folder), "--bootstrap", "50"])
    assert status == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["metrics"]["clip_i"]["value"] == pytest.approx(1.0, abs=1e-5)  # generated == real target
    assert report["extra_evaluators"][0]["evaluator"] == "biomedclip"
