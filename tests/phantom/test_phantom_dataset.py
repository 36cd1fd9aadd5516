import re
import threading

import numpy as np
import pandas as pd

from cfbench.cli import main
from cfbench.datasets.edit_dataset import EditDataset
from cfbench.evaluation.evaluate import evaluate_run
from cfbench.phantom.dataset import assign_splits, build_phantom_dataset, demo_dataset, pair_seed
from cfbench.phantom.render import render_pair
from cfbench.phantom.scenario import sample_pair
from cfbench.runs.generate import RunSettings, generate


def test_cli_writes_phantom_dataset_with_splits(tmp_path, capsys):
    out = tmp_path / "phantom"
    assert main(["--quiet", "data", "phantom", "--n", "20", "--out", str(out), "--resolution", "64", "--seed", "5"]) == 0
    table = pd.read_csv(out / "instructions.csv")
    assert table["split"].value_counts().to_dict() == {"train": 14, "holdout": 4, "test": 1, "val": 1}
    assert table["subject_id"].is_unique  # one pair per patient: splits are patient-wise
    for split in ("train", "holdout", "test", "val"):
        dataset = EditDataset(out, split, resolution=64)
        for sample in dataset:
            for image in (dataset.past_image(sample), dataset.current_image(sample),
                          dataset.counterfactual_image(sample)):
                assert image.shape == (64, 64)
            assert dataset.lesion_mask(sample).any()


def test_rows_match_the_rendered_pairs(tmp_path):
    build_phantom_dataset(tmp_path, 6, seed=3, resolution=64, fractions={"holdout": 1.0}, progress=False)
    dataset = EditDataset(tmp_path, "holdout", resolution=64)
    for index, sample in enumerate(dataset):
        pair = sample_pair(pair_seed(3, index))
        rendered = render_pair(pair, 64)
        assert sample.instruction == pair.instruction
        assert sample.operations == list(pair.operations)
        assert sample.labels == pair.current.labels() and sample.past_labels == pair.past.labels()
        assert (sample.sex, sample.race) == (pair.patient.sex, pair.patient.group)
        assert sample.target_report == pair.current.impression()
        assert np.abs(dataset.past_image(sample) - rendered.past).max() <= 0.5 / 65535 + 1e-7
        assert np.array_equal(dataset.lesion_mask(sample), rendered.lesion_change_mask)


def test_true_counterfactual_is_local_and_exact(tmp_path):
    build_phantom_dataset(tmp_path / "data", 8, resolution=64, fractions={"holdout": 1.0}, progress=False)
    settings = RunSettings(model="true-counterfactual", split="holdout", data_dir=tmp_path / "data",
                           out=tmp_path / "run", resolution=64)
    generate(settings, progress=False)
    metrics = evaluate_run(tmp_path / "run", evaluator="none", progress=False)["metrics"]
    assert metrics["mae_to_true_counterfactual"]["value"] == 0.0
    assert metrics["change_outside_lesion"]["value"] == 0.0  # bit-exact outside the lesion mask
    assert metrics["change_inside_lesion"]["value"] > 0.01


def test_split_assignment_is_deterministic_and_complete():
    first = assign_splits(101, {"train": 0.7, "holdout": 0.2, "test": 0.05, "val": 0.05}, seed=1)
    assert first == assign_splits(101, {"train": 0.7, "holdout": 0.2, "test": 0.05, "val": 0.05}, seed=1)
    assert {name: first.count(name) for name in set(first)} == {"train": 71, "holdout": 20, "test": 5, "val": 5}


def test_demo_cache_is_built_once_even_concurrently(tmp_path):
    folders = []
    threads = [threading.Thread(target=lambda: folders.append(demo_dataset(tmp_path, resolution=32, progress=False)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(folders)) == 1 and len(folders) == 3
    assert [p.name for p in tmp_path.iterdir()] == [folders[0].name]  # no leftover temporary folders
    assert len(EditDataset(folders[0], "demo", 32)) == 48


def test_demo_prints_reference_table(tmp_path, capsys):
    # 128 px: the shipped phantom CNN works at 128 px input (at 64 px atelectasis AUROC drops to ~0.8)
    assert main(["--quiet", "demo", "--resolution", "128", "--out", str(tmp_path / "runs"),
                 "--models", "identity", "ground-truth", "true-counterfactual"]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("| ")]
    # headers carry the direction and the scale ("Patho ↑ (AUROC x 100)"); key them by the short title
    header = [cell.strip().split(" ↑")[0].split(" ↓")[0].split(" (")[0] for cell in lines[0].split("|")[1:-1]]
    assert "Patho ↑ (AUROC x 100)" in lines[0] and "KL ↓ (nats)" in lines[0] and "| n |" in lines[0]
    rows = {cells[0]: dict(zip(header, cells)) for cells in
            ([cell.strip() for cell in line.split("|")[1:-1]] for line in lines[1:])}
    identity, truth, exact = rows["identity"], rows["ground-truth"], rows["true-counterfactual"]

    def value(cell: str) -> float:  # "99.23 [98.12, 99.97]": the value, then its bootstrap interval
        assert re.fullmatch(r"-?[\d.]+ \[-?[\d.]+, -?[\d.]+\]", cell), cell
        return float(cell.split(" ")[0])

    assert identity["n"] == "48"
    # the exact counterfactual and the real target carry the target's findings; the input does not (x 100)
    assert value(exact["Patho"]) > 95 and value(truth["Patho"]) > 95
    assert value(identity["Patho"]) < value(exact["Patho"]) - 10
    # everyone keeps the patient: group and age survive
    for row in (identity, truth, exact):
        assert value(row["Race"]) > 95 and value(row["Age"]) > 90
    assert identity["Change outside lesion"].startswith("0.0000") and identity["Change inside lesion"].startswith("0.0000")
    assert exact["MAE to true CF"].startswith("0.0000") and exact["Change outside lesion"].startswith("0.0000")
    assert value(truth["KL"]) == 0.0 and value(truth["FID"]) == 0.0
    assert "95% bootstrap interval" in printed
    # each model's summary as it finishes, before the table, with the estimate for the rest
    finished = [line for line in printed.splitlines() if line.startswith("[")]
    assert [line.split(": ")[1].split(" (")[0] for line in finished] == ["identity", "ground-truth",
                                                                         "true-counterfactual"]
    assert "left for 2 model(s)" in finished[0] and finished[2].endswith("all models done")
    assert printed.index(finished[2]) < printed.index(lines[0])


def test_impression_names_each_current_finding_with_its_level_and_side():
    from cfbench.phantom.scenario import FindingState

    assert FindingState().impression() == "No acute cardiopulmonary process."
    state = FindingState(effusion=("left", "small"), cardiomegaly="mild", pneumothorax=("right", "large"),
                         atelectasis="left base")
    assert state.impression() == ("Small left pleural effusion. Mild cardiomegaly. Large right pneumothorax. "
                                  "Atelectasis at the left base.")


def test_phantom_datasets_carry_the_shipped_pseudo_masks(tmp_path):
    """Every phantom dataset has pseudo_masks.npz (the shipped per-finding unions of true lesion masks of the
    training stream), and those unions contain the lesion masks of the first training pairs."""
    from cfbench.datasets.pseudo_masks import DATASET_MASKS, PseudoMasks, default_pseudo_masks
    from cfbench.phantom.pseudo_masks import phantom_pseudo_masks, shipped_phantom_pseudo_masks

    out = build_phantom_dataset(tmp_path / "d", 6, seed=1, resolution=32, progress=False)
    shipped = shipped_phantom_pseudo_masks()
    copied = PseudoMasks.load(out / DATASET_MASKS)
    assert sorted(copied.masks) == ["atelectasis", "cardiomegaly", "edema", "pleural effusion", "pneumothorax"]
    assert all(np.array_equal(copied.masks[k], shipped.masks[k]) for k in shipped.masks)
    assert default_pseudo_masks(out, 32).source == shipped.source
    few = phantom_pseudo_masks(n_pairs=12, progress=False)
    for name, mask in few.masks.items():
        assert mask.any() and not (mask & ~shipped.masks[name]).any()  # a subset of the 300-pair union
