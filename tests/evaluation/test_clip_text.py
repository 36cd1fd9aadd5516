"""CLIP-I image-text: BiomedCLIP's text tower (a Hugging Face BERT) built offline from a local folder, equal to
open_clip's own ``encode_text``; and the CLI records the variant and computes the image-text cosine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from cfbench.evaluation.biomedclip import TEXT_MODEL_DIR, BiomedCLIPEmbedder  # noqa: E402
from tests.evaluation.test_biomedclip import (  # noqa: E402
    EMBED_DIM,
    OPENAI_MEAN,
    OPENAI_STD,
    PUBMEDBERT,
    SIZE,
    _register_tiny_timm_vit,
    _write_folder,
)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "add", "the", "finding", "of", "small", "left", "pleural",
         "effusion", "remove", "cardiomegaly", "edema", "change", "level", "from", "mild", "to", "moderate"]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from transformers import BertConfig, BertTokenizer

    tmp = tmp_path_factory.mktemp("clip-text")
    folder = tmp / "biomedclip"
    text_dir = folder / TEXT_MODEL_DIR
    text_dir.mkdir(parents=True)
    (text_dir / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertTokenizer(str(text_dir / "vocab.txt")).save_pretrained(text_dir)
    BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=64).save_pretrained(text_dir)
    vision_cfg = {"timm_model_name": _register_tiny_timm_vit(), "timm_model_pretrained": False, "timm_pool": "",
                  "timm_proj": "linear", "image_size": SIZE}
    text_cfg = {"hf_model_name": str(text_dir), "hf_tokenizer_name": str(text_dir), "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 32}
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(embed_dim=EMBED_DIM, vision_cfg=vision_cfg,
                                     text_cfg=dict(text_cfg, hf_model_pretrained=False)).eval()
    saved_text = dict(text_cfg, hf_model_name=PUBMEDBERT, hf_tokenizer_name=PUBMEDBERT)  # as BiomedCLIP's config
    model_cfg = {"embed_dim": EMBED_DIM, "vision_cfg": vision_cfg, "text_cfg": saved_text}
    _write_folder(folder, model, model_cfg, {"mean": OPENAI_MEAN, "std": OPENAI_STD})
    return folder, model, text_dir


def test_text_embeddings_equal_open_clip_encode_text(clip_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder, model, text_dir = clip_folder
    embedder = BiomedCLIPEmbedder.from_folder(folder, with_text=True)
    texts = ["add the finding of small left pleural effusion", "remove cardiomegaly", "change the level of edema"]
    ours = embedder.embed_texts(texts)
    tokenizer = open_clip.tokenizer.HFTokenizer(str(text_dir), context_length=32)
    with torch.no_grad():
        theirs = model.encode_text(tokenizer(texts), normalize=True).numpy()
    assert ours.shape == (3, EMBED_DIM) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # without the text tower: a clear error, and the image tower alone still loads
    with pytest.raises(ValueError, match="without its text tower"):
        BiomedCLIPEmbedder.from_folder(folder).embed_texts(texts)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        BiomedCLIPEmbedder.from_folder(folder, text_model=folder / "nowhere")


def test_cli_clip_i_image_text_is_the_cosine_to_the_prompt(clip_folder, random_dataset, tmp_path, monkeypatch, capsys):
    """CLIP-I image-text = mean over samples of cos(image embedding of the output, text embedding of the prompt),
    recomputed here by hand; the variant is recorded in metrics.json."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from cfbench.cli import main
    from cfbench.datasets.edit_dataset import EditDataset
    from cfbench.evaluation.evaluate import clip_prompt
    from cfbench.evaluation.results import load_table
    from cfbench.runs.store import load_generated

    folder, _, _ = clip_folder
    out = tmp_path / "run"
    base = ["--quiet", "run", "--model", "identity", "--split", "holdout", "--data", str(random_dataset),
            "--resolution", "32", "--out", str(out), "--limit", "4", "--evaluator", "none",
            "--clip-model", str(folder)]
    assert main(base + ["--clip-i", "image-text"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["clip_i_variant"] == "image-text" and "CLIP-I = image-text" in metrics["protocol_choices"]
    embedder = BiomedCLIPEmbedder.from_folder(folder, with_text=True)
    dataset = EditDataset(random_dataset, "holdout", 32)
    samples = [dataset[sample_id] for sample_id in load_table(out).sample_ids]
    assert len(samples) == 4
    images = np.stack([load_generated(out, s.sample_id, 32) for s in samples])
    image_embedding = embedder.predict(images)["embedding"]
    text_embedding = embedder.embed_texts([clip_prompt(s) for s in samples])
    expected = float(np.mean(np.sum(image_embedding * text_embedding, axis=1)))
    assert metrics["metrics"]["clip_i"]["value"] == pytest.approx(expected, abs=1e-5)
    printed = capsys.readouterr().out
    assert "CLIP-I (img-txt)" in printed
    from cfbench.leaderboard.formats import to_latex, to_markdown
    from cfbench.leaderboard.table_model import build_leaderboard, load_runs

    board = build_leaderboard(load_runs([out]), "progemu", reported=[])
    assert "CLIP-I (img-txt) ↑" in to_markdown(board) and "CLIP-I = image-text" in to_markdown(board)
    assert "CLIP-I (img-txt)" in to_latex(board)
    # the default image-image variant gives another number (identity output vs target image)
    assert main(["--quiet", "eval", "--run", str(out), "--evaluator", "none", "--clip-model", str(folder)]) == 0
    default = json.loads((out / "metrics.json").read_text())
    assert default["protocol"]["clip_i_variant"] == "image-image"
    assert default["metrics"]["clip_i"]["value"] != pytest.approx(expected, abs=1e-4)
