"""Training of the shipped phantom evaluators (:class:`cfbench.phantom.evaluator.PhantomNet`).

``train_phantom_evaluators(out_dir)`` renders single phantom radiographs (random patient, findings, pose
and noise seed, the same samplers the benchmark phantoms use) with their labels, once, into memory
(float16, already resized to 128 px with :func:`~cfbench.phantom.evaluator.resize_to_input`), trains the
CNN with AdamW on the sum of four losses (BCE on the 5 finding labels, cross-entropy on the group, BCE on
the sex, Huber on the normalised age), scores it on a held-out set rendered from another seed stream and
writes ``phantom_evaluator.safetensors`` + ``phantom_evaluator.json`` into ``out_dir``.

Seeds: example ``i`` of stream ``s`` is drawn from ``np.random.SeedSequence([seed, s, i])``; training uses
stream ``TRAIN_STREAM``, the held-out set ``HELDOUT_STREAM``, and ``TEST_STREAM`` is left to the tests, so
the three never share a phantom. Training is deterministic on CPU for a given seed (torch and numpy are
seeded, batches are drawn from a seeded generator, rendering order does not depend on ``workers``).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cfbench.core.storage import json_safe
from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.phantom.evaluator import (
    INPUT_SIZE,
    SCORES_NAME,
    WEIGHTS_NAME,
    PhantomNet,
    _sha256,
    resize_to_input,
    save_weights,
)
from cfbench.phantom.render import render
from cfbench.phantom.scenario import (
    GROUPS,
    PHANTOM_VERSION,
    FindingState,
    Patient,
    sample_findings,
    sample_patient,
    sample_pose,
)

TRAIN_STREAM, HELDOUT_STREAM, TEST_STREAM = 0, 1, 2

# Targets of the held-out scores (the acceptance criteria).
TARGET_AUROC = 0.95  # every finding, and the group (macro one-vs-rest)
TARGET_AGE_PEARSON = 0.90

# The weakest level of each finding, over-sampled in training (``weak_fraction``).
_WEAKEST = {"effusion": "small", "cardiomegaly": "mild", "edema": "mild", "pneumothorax": "small"}


@dataclass
class PhantomExamples:
    """Rendered single phantoms and their labels, N examples.

    images: float16 (N, 128, 128) in [0, 1], already resized with ``resize_to_input``.
    findings: float32 (N, 5) 0/1 labels, EVALUATED_FINDINGS order.
    group: int64 (N,) index into GROUPS. sex: float32 (N,) 1 = male. age: float32 (N,) years.
    levels: (N, 5) str, the level of each finding ("" absent; "present" for atelectasis).
    """

    images: np.ndarray
    findings: np.ndarray
    group: np.ndarray
    sex: np.ndarray
    age: np.ndarray
    levels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def _level(findings: FindingState, column: str) -> str:
    value = {"Atelectasis": findings.atelectasis, "Cardiomegaly": findings.cardiomegaly, "Edema": findings.edema,
             "Pleural Effusion": findings.effusion, "Pneumothorax": findings.pneumothorax}[column]
    if value is None:
        return ""
    if isinstance(value, tuple):  # (location, level)
        return value[1]
    return "present" if column == "Atelectasis" else value


def sample_example(seed: int, stream: int, index: int, weak_fraction: float = 0.0):
    """(patient, findings, pose, noise_seed) of example ``index`` of ``stream``.

    Findings come from :func:`~cfbench.phantom.scenario.sample_findings` (the benchmark's sampler). With
    probability ``weak_fraction`` per present finding, its level is replaced by the weakest one (small
    effusion / pneumothorax, mild cardiomegaly / edema); presence rates are unchanged.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), int(index)]))
    patient = sample_patient(rng)
    findings = sample_findings(rng)
    pose = sample_pose(rng)
    noise_seed = int(rng.integers(0, 2**31 - 1))
    if weak_fraction > 0:
        values = {name: getattr(findings, name) for name in _WEAKEST}
        for name, weakest in _WEAKEST.items():
            if values[name] is not None and rng.random() < weak_fraction:
                values[name] = (values[name][0], weakest) if isinstance(values[name], tuple) else weakest
        findings = FindingState(**{**findings.__dict__, **values})
    return patient, findings, pose, noise_seed


def render_example(task: tuple[int, int, int, int, float]) -> tuple[np.ndarray, np.ndarray, int, float, float, list[str]]:
    """Render one example: task = (seed, stream, index, resolution, weak_fraction) ->
    (float16 (128, 128) image, (5,) labels, group index, sex (1 = male), age years, levels)."""
    seed, stream, index, resolution, weak_fraction = task
    patient, findings, pose, noise_seed = sample_example(seed, stream, index, weak_fraction)
    image = render(patient, findings, pose, noise_seed, resolution)
    small = resize_to_input(torch.from_numpy(image)[None])[0, 0].numpy().astype(np.float16)
    return (small, *example_labels(patient, findings))


def example_labels(patient: Patient, findings: FindingState) -> tuple[np.ndarray, int, float, float, list[str]]:
    """(5 finding labels float32, group index, sex (1 = male), age years, level of each finding)."""
    labels = findings.labels()
    return (np.array([labels[c] for c in EVALUATED_FINDINGS], np.float32), GROUPS.index(patient.group),
            1.0 if patient.sex == "M" else 0.0, patient.age, [_level(findings, c) for c in EVALUATED_FINDINGS])


def stack_examples(images: list[np.ndarray], labels: list[tuple]) -> PhantomExamples:
    """PhantomExamples from per-example images and :func:`example_labels` tuples."""
    n = len(labels)
    findings, group, sex, age, levels = zip(*labels) if n else ((),) * 5
    return PhantomExamples(
        images=np.stack(images) if n else np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.float16),
        findings=np.stack(findings) if n else np.zeros((0, len(EVALUATED_FINDINGS)), np.float32),
        group=np.array(group, np.int64), sex=np.array(sex, np.float32), age=np.array(age, np.float32),
        levels=np.array(levels, dtype=object).reshape(n, len(EVALUATED_FINDINGS)),
    )


def _worker_init() -> None:
    torch.set_num_threads(1)


def render_examples(n: int, seed: int, stream: int, resolution: int = 256, weak_fraction: float = 0.0,
                    workers: int = 2, progress: bool = True, desc: str = "rendering") -> PhantomExamples:
    """Render examples 0..n-1 of ``stream`` with ``workers`` processes (1: in this process)."""
    tasks = [(seed, stream, index, int(resolution), float(weak_fraction)) for index in range(n)]
    bar = dict(total=n, desc=desc, unit="img", disable=not progress)
    if workers > 1 and n > 1:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
            results = list(tqdm(pool.imap(render_example, tasks, chunksize=16), **bar))
    else:
        results = [render_example(task) for task in tqdm(tasks, **bar)]
    return stack_examples([result[0] for result in results], [result[1:] for result in results])


# --------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, scores))


def score_outputs(outputs: dict[str, np.ndarray], examples: PhantomExamples) -> dict[str, Any]:
    """Held-out scores of evaluator outputs (the ``predict`` dict: probabilities, years) on ``examples``.

    Returns ``auroc`` {finding: AUROC}, ``auroc_by_level`` {finding: {level: AUROC of that level's
    positives vs all negatives}}, ``group_auroc`` (macro one-vs-rest), ``sex_auroc``, ``age_pearson``,
    ``age_mae`` (years), ``min_finding_auroc`` and ``targets_met``.
    """
    from sklearn.metrics import roc_auc_score

    scores: dict[str, Any] = {"auroc": {}, "auroc_by_level": {}}
    for column, name in enumerate(EVALUATED_FINDINGS):
        labels, probs = examples.findings[:, column], outputs["pathology"][:, column]
        scores["auroc"][name] = _auroc(labels, probs)
        negative = labels == 0
        by_level = {}
        for level in sorted({str(v) for v in examples.levels[:, column]} - {""}):
            positive = examples.levels[:, column] == level
            if positive.any() and negative.any():
                keep = positive | negative
                by_level[level] = _auroc(positive[keep].astype(np.float32), probs[keep])
        scores["auroc_by_level"][name] = by_level
    race = outputs["race"].astype(np.float64)
    race = race / race.sum(axis=1, keepdims=True)
    scores["group_auroc"] = (float(roc_auc_score(examples.group, race, multi_class="ovr", average="macro",
                                                 labels=list(range(len(GROUPS)))))
                             if len(np.unique(examples.group)) == len(GROUPS) else math.nan)
    scores["sex_auroc"] = _auroc(examples.sex, outputs["sex"])
    age = outputs["age"].astype(np.float64)
    scores["age_pearson"] = float(np.corrcoef(age, examples.age)[0, 1]) if len(age) > 1 else math.nan
    scores["age_mae"] = float(np.abs(age - examples.age).mean()) if len(age) else math.nan
    defined = [value for value in scores["auroc"].values() if not math.isnan(value)]
    scores["min_finding_auroc"] = float(min(defined)) if defined else math.nan
    scores["targets_met"] = bool(scores["min_finding_auroc"] >= TARGET_AUROC and scores["group_auroc"] >= TARGET_AUROC
                                 and scores["age_pearson"] >= TARGET_AGE_PEARSON)
    return scores


@torch.no_grad()
def predict_examples(net: PhantomNet, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """The evaluator outputs (probabilities, years) of ``net`` on preprocessed (N, 128, 128) images."""
    net.eval()
    parts: dict[str, list[np.ndarray]] = {"pathology": [], "race": [], "sex": [], "age": []}
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size].astype(np.float32))[:, None]
        out = net(x.contiguous(memory_format=torch.channels_last))
        parts["pathology"].append(torch.sigmoid(out["pathology"]).numpy())
        parts["race"].append(torch.softmax(out["race"], dim=1).numpy())
        parts["sex"].append(torch.sigmoid(out["sex"]).numpy())
        parts["age"].append(out["age"].numpy())
    return {key: np.concatenate(value) for key, value in parts.items()}


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _losses(out: dict[str, torch.Tensor], findings, group, sex, age_z) -> dict[str, torch.Tensor]:
    return {
        "pathology": F.binary_cross_entropy_with_logits(out["pathology"], findings, reduction="sum") / len(findings),
        "group": F.cross_entropy(out["race"], group),
        "sex": F.binary_cross_entropy_with_logits(out["sex"], sex),
        "age": F.smooth_l1_loss(out["age_z"], age_z, beta=0.5),
    }


def train_phantom_evaluators(
    out_dir: str | Path,
    n_train: int = 7000,
    n_val: int = 1000,
    epochs: int = 6,
    seed: int = 0,
    resolution: int = 256,
    workers: int = 2,
    progress: bool = True,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    weak_fraction: float = 0.3,
    channels: tuple[int, ...] = (16, 32, 64, 128, 256),
    convs: tuple[int, ...] = (1, 1, 2, 2, 1),
) -> dict[str, Any]:
    """Render, train, score and save the phantom evaluator; returns the held-out scores (the JSON dict).

    Args:
        out_dir: folder for ``phantom_evaluator.safetensors`` and ``phantom_evaluator.json``.
        n_train, n_val: training / held-out examples (single radiographs).
        epochs: passes over the training set.
        seed: seeds torch, the batch order and the phantom streams (training stream 0, held-out 1).
        resolution: pixels the phantoms are rendered at before the antialiased resize to 128.
        workers: rendering processes (1: render in this process).
        weak_fraction: per present finding, probability that a TRAINING example gets its weakest level
            (the held-out set always uses the benchmark's ``sample_findings`` as is).
        batch_size, lr, weight_decay: AdamW with linear warm-up (first 5% of steps) and cosine decay.
        channels, convs: the PhantomNet architecture.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train = render_examples(n_train, seed, TRAIN_STREAM, resolution, weak_fraction, workers, progress,
                            desc="rendering training phantoms")
    heldout = render_examples(n_val, seed, HELDOUT_STREAM, resolution, 0.0, workers, progress,
                              desc="rendering held-out phantoms")
    render_seconds = time.perf_counter() - started

    torch.manual_seed(seed)
    np.random.seed(seed)
    net = PhantomNet(tuple(channels), tuple(convs)).to(memory_format=torch.channels_last)
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    total_steps = steps_per_epoch * epochs
    warmup = max(1, int(0.05 * total_steps))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    images = torch.from_numpy(train.images)  # float16, converted per batch
    findings = torch.from_numpy(train.findings)
    group = torch.from_numpy(train.group)
    sex = torch.from_numpy(train.sex)
    age_z = (torch.from_numpy(train.age) - net.age_mean) / net.age_std
    order_generator = torch.Generator().manual_seed(seed)

    train_started = time.perf_counter()
    history = []
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(n_train, generator=order_generator)
        totals: dict[str, float] = {}
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress)
        for step in bar:
            index = order[step * batch_size:(step + 1) * batch_size]
            x = images[index].float()[:, None].contiguous(memory_format=torch.channels_last)
            losses = _losses(net(x), findings[index], group[index], sex[index], age_z[index])
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value.item() * len(index)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        epoch_losses = {key: value / n_train for key, value in totals.items()}
        entry = {"epoch": epoch + 1, "train_loss": epoch_losses}
        if n_val and (epoch == epochs - 1 or progress):
            held = score_outputs(predict_examples(net, heldout.images), heldout)
            entry.update({"min_finding_auroc": held["min_finding_auroc"], "group_auroc": held["group_auroc"],
                          "age_pearson": held["age_pearson"]})
            if progress:
                tqdm.write(f"epoch {epoch + 1}: loss {sum(epoch_losses.values()):.4f}; held-out min finding AUROC "
                           f"{held['min_finding_auroc']:.4f}, group AUROC {held['group_auroc']:.4f}, "
                           f"age r {held['age_pearson']:.4f}")
        history.append(entry)
    train_seconds = time.perf_counter() - train_started

    net = net.to(memory_format=torch.contiguous_format).eval()
    scores = score_outputs(predict_examples(net, heldout.images), heldout) if n_val else {}
    weights_path = save_weights(net, out_dir / WEIGHTS_NAME, trained_on={
        "n_train": n_train, "epochs": epochs, "seed": seed, "resolution": resolution})
    record = {
        "evaluator": "phantom-cnn",
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": _sha256(weights_path),
        "weights_bytes": weights_path.stat().st_size,
        "phantom_version": PHANTOM_VERSION,
        "config": net.config,
        "parameters": sum(p.numel() for p in net.parameters()),
        "heldout": scores,
        "targets": {"finding_auroc": TARGET_AUROC, "group_auroc": TARGET_AUROC, "age_pearson": TARGET_AGE_PEARSON},
        "training": {
            "n_train": n_train, "n_val": n_val, "epochs": epochs, "seed": seed, "resolution": resolution,
            "train_stream": TRAIN_STREAM, "heldout_stream": HELDOUT_STREAM,
            "seed_rule": "example i of stream s: numpy SeedSequence([seed, s, i])",
            "weak_fraction": weak_fraction, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "optimizer": "AdamW, 5% linear warm-up, cosine decay",
            "losses": "BCE(findings, summed) + CE(group) + BCE(sex) + Huber(age z, beta 0.5)",
            "render_seconds": round(render_seconds, 1), "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.perf_counter() - started, 1), "workers": workers,
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "history": history,
        },
    }
    record = json_safe(record)
    (out_dir / SCORES_NAME).write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return record
