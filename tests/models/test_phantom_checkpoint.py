"""cfbench's shipped phantom-trained InstructX2X (cfbench/data/phantom_instructx2x): the default weights of the
InstructPix2Pix-family adapters on phantom splits, loaded through the same adapters as any folder, and a
generator that edits the pathology the instruction names (evaluated with the shipped phantom evaluator)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cfbench.api.model import LoadContext
from cfbench.api.registry import get_model_class, phantom_weights_path, resolve_model_path
from cfbench.core.config import PACKAGE_DATA_DIR
from cfbench.core.errors import WeightsNotFoundError
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.phantom.dataset import build_phantom_dataset
from tests.helpers.datasets import write_random_dataset

CHECKPOINT = PACKAGE_DATA_DIR / "phantom_instructx2x"
FAMILY = ("instructx2x", "instructx2x-relevance-only", "instructx2x-mask-only", "instructpix2pix")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_checkpoint_is_shipped_small_and_the_family_default_on_phantoms():
    weights = sorted(CHECKPOINT.rglob("*.safetensors"))
    assert {p.parent.name for p in weights} == {"unet", "vae", "text_encoder"}
    assert sum(p.stat().st_size for p in weights) <= 30 * 2**20
    for name in FAMILY:
        cls = get_model_class(name)
        assert phantom_weights_path(cls) == CHECKPOINT
        assert resolve_model_path(cls, None, "phantom") == CHECKPOINT
    assert phantom_weights_path(get_model_class("biomedjourney")) is None  # another model: not its weights


def test_real_data_still_needs_real_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("CFBENCH_WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(WeightsNotFoundError, match="(?s)instructx2x.*phantom datasets only"):
        resolve_model_path(get_model_class("instructx2x"), None, "nih")
    data = write_random_dataset(tmp_path / "data", n=2)  # not a phantom dataset
    with pytest.raises(WeightsNotFoundError):
        get_model_class("instructx2x").load(LoadContext(dataset=EditDataset(data, "holdout", 32)))


def test_shipped_generator_adds_what_the_instruction_names_and_only_there(tmp_path):
    """On phantoms whose instruction adds edema or a pleural effusion (the findings this checkpoint learned
    best; see its model card), the shipped evaluator's probability of that finding rises from input to output,
    the output changes the image inside the true lesion far more than outside it, and the guidance map
    points at the true change. 8 samples, 10 DDIM steps: a few seconds."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from cfbench.core.findings import EVALUATED_FINDINGS
    from cfbench.phantom.evaluator import PhantomEvaluator
    from cfbench.runs.generate import make_request

    data = build_phantom_dataset(tmp_path / "data", 60, seed=11, resolution=128, fractions={"holdout": 1.0},
                                 progress=False)
    dataset = EditDataset(data, "holdout", 128)
    wanted = {"edema": "Edema", "pleural effusion": "Pleural Effusion"}
    chosen = [(s, next(wanted[op.finding] for op in s.operations if op.op == "add" and op.finding in wanted))
              for s in dataset if any(op.op == "add" and op.finding in wanted for op in s.operations)][:8]
    assert len(chosen) == 8
    model = get_model_class("instructx2x").load(LoadContext(dataset=dataset, options={"steps": "10"}))
    assert model.identity()["source"].startswith("phantom checkpoint") and model.identity()["native_resolution"] == 128
    requests = [make_request(sample, dataset, 0) for sample, _ in chosen]
    results = model.edit(requests)
    evaluator = PhantomEvaluator.from_file()
    before = evaluator.predict(np.stack([r.image for r in requests]))["pathology"]
    after = evaluator.predict(np.stack([r.image for r in results]))["pathology"]
    columns = [EVALUATED_FINDINGS.index(finding) for _, finding in chosen]
    rise = after[np.arange(8), columns] - before[np.arange(8), columns]
    assert rise.mean() > 0.2, rise
    inside, outside, detection = [], [], []
    for (sample, _), request, result in zip(chosen, requests, results):
        lesion = dataset.lesion_mask(sample)
        change = np.abs(result.image - request.image)
        inside.append(change[lesion].mean())
        outside.append(change[~lesion].mean())
        detection.append(roc_auc_score(lesion.ravel(), result.guidance_map.ravel()))
    assert np.mean(outside) < 0.25 * np.mean(inside), (np.mean(outside), np.mean(inside))
    assert np.mean(detection) > 0.8


def test_shipped_generator_beats_identity_on_pathology_auroc(tmp_path):
    """24 fresh phantoms (a stream the generator never saw), 10 DDIM steps: the mean over findings of the
    pathology AUROC (scikit-learn's roc_auc_score of the shipped evaluator's probability on each output against
    the target labels) is well above identity's, whose outputs are the inputs. Demo split, 48 samples,
    20 steps: 0.897 against 0.788."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from cfbench.core.findings import EVALUATED_FINDINGS
    from cfbench.phantom.evaluator import PhantomEvaluator
    from cfbench.runs.generate import make_request

    data = build_phantom_dataset(tmp_path / "data", 24, seed=12, resolution=128, fractions={"holdout": 1.0},
                                 progress=False)
    dataset = EditDataset(data, "holdout", 128)
    samples = list(dataset)
    model = get_model_class("instructx2x").load(LoadContext(dataset=dataset, options={"steps": "10"}))
    requests = [make_request(sample, dataset, 0) for sample in samples]
    outputs = [result.image for start in range(0, len(requests), 8) for result in model.edit(requests[start:start + 8])]
    evaluator = PhantomEvaluator.from_file()

    def mean_auroc(images) -> float:
        probabilities = evaluator.predict(np.stack(images))["pathology"]
        scores = []
        for column, finding in enumerate(EVALUATED_FINDINGS):
            labels = np.array([sample.labels[finding] for sample in samples])
            if 0 < labels.sum() < len(labels):
                scores.append(roc_auc_score(labels, probabilities[:, column]))
        return float(np.mean(scores))

    generated, identity = mean_auroc(outputs), mean_auroc([r.image for r in requests])
    print(f"pathology mean AUROC: generated {generated:.3f}, identity {identity:.3f}")
    assert generated > identity + 0.05, (generated, identity)


def test_the_model_card_states_the_measured_values():
    """The model card's numbers are the ones its training records and the committed demo leaderboard hold."""
    card = (CHECKPOINT / "MODEL_CARD.md").read_text()
    record = json.loads((CHECKPOINT / "model_card.json").read_text())
    vae = json.loads((CHECKPOINT / "training" / "vae_training" / "train_summary.json").read_text())
    x2x = json.loads((CHECKPOINT / "training" / "instructx2x" / "train_summary.json").read_text())
    earlier_steps = sum(json.loads((CHECKPOINT / "training" / part / "instructx2x" / "train_summary.json").read_text())
                        ["steps"] for part in ("part1_from_scratch", "part2_warm_start"))
    assert vae["acceptance"]["passed"] and vae["acceptance"]["max_abs_delta"] <= 0.01
    assert f"max |delta| {vae['acceptance']['max_abs_delta']:.4f}" in card
    assert f"{x2x['steps']} / " in card and record["instructx2x"]["steps_done"] == x2x["steps"]
    # the shipped UNet was trained in three parts (from scratch, then two warm starts): all counted in the total
    assert record["instructx2x"]["continued_from"]["steps_before"] == earlier_steps
    assert f"{x2x['steps'] + earlier_steps} steps in all" in card
    heldout = record["heldout_demo"]
    demo = pd.read_csv(PACKAGE_DATA_DIR.parents[1] / "leaderboards" / "phantom-demo" / "instructx2x.csv")
    for model in ("instructx2x", "instructpix2pix"):
        patho = heldout[model]["pathology_mean_auroc"]
        assert f"| {model} | {patho:.3f}" in card
        assert demo.set_index("model").loc[model, "patho"] == pytest.approx(100 * patho, abs=1e-9)


def test_the_demo_runs_the_shipped_generator_with_and_without_rse(monkeypatch):
    from cfbench.leaderboard import demo

    models, notes = demo.demo_models()
    assert models == ["identity", "instructpix2pix", "instructx2x", "ground-truth", "true-counterfactual"]
    assert notes == []
    assert demo.demo_models(all_models=True)[0][3:5] == ["instructx2x-relevance-only", "instructx2x-mask-only"]
    monkeypatch.setattr(demo, "phantom_weights_path", lambda cls: None)  # an installation without the checkpoint
    models, notes = demo.demo_models()
    assert models == ["identity", "ground-truth", "true-counterfactual"]
    assert len(notes) == 2 and "cfbench phantom train-generator" in notes[0]
