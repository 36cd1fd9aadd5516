"""Scoring: per-sample evaluator outputs + ground truth -> every metric, with bootstrap intervals.

The numbers of the protocols (InstructX2X, ProgEmu) from one table of per-sample values
(:class:`SampleTable`); no images here. Every choice that changes a number is a field of
:class:`Protocol` and is written into metrics.json.

Metric names (all point estimates come with a paired percentile bootstrap interval):

- ``pathology_mean_auroc`` and ``pathology_auroc/<Finding>``: evaluator probabilities on generated
  images vs the target study's CheXpert labels (policy: ``Protocol.label_policy``).
- ``race_auroc`` (one-vs-rest, macro), ``sex_auroc``, ``age_pearson``: retention of the patient's
  attributes, evaluator outputs on generated images vs the dataset's demographics.
- ``cmig``: sqrt(a_bar * f_bar) on a 0-100 scale from ``Protocol.accuracy_terms`` / ``retention_terms``.
- ``kl_divergence``: sum over findings of Bernoulli KL(P || Q), P / Q = mean probabilities on the real
  target images / on the generated images (nats, no scaling); ``Protocol.kl_variant`` picks another
  reading of InstructX2X Eq. 4 (:func:`cfbench.metrics.divergence.pathology_kl`).
- ``fid``: Frechet distance between evaluator features of real target and generated images.
- ``kid``, ``manifold_precision``, ``manifold_recall``, ``density``, ``coverage``: realism beside FID on the
  same features (:mod:`cfbench.evaluation.realism`); none enters CMIG.
- ``f1_macro`` and ``f1/<Finding>``: ProgEmu's F1 at ``Protocol.f1_threshold``.
- ``clip_i``: mean cosine of BiomedCLIP image embeddings, generated vs real target (ProgEmu's CLIP-I; the
  pair compared is not published: ``Protocol.clip_i_variant`` "image-text" compares the generated image
  with the text embedding of its prompt, ``real["text_embedding"]``, instead).
- ``age_pearson`` correlates with ``age`` (at the study) or, with ``Protocol.age_reference`` "anchor",
  with ``anchor_age``.
- ``bleu3``, ``meteor``, ``rouge_l``: generated explanations vs reference explanations (ProgEmu).
- pixel measures (``mae_to_target``, ``change_inside_lesion``, ...): sample means, see cfbench.evaluation.evaluate.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from cfbench.core.findings import EVALUATED_FINDINGS
from cfbench.evaluation.protocol import Protocol
from cfbench.evaluation.realism import realism_scores
from cfbench.metrics.bootstrap import (ConfidenceInterval, bootstrap_many, interval_from_replicates,
                                      paired_difference_ci, resample_indices)
from cfbench.metrics.classification import PathologyAUROC, PathologyF1, RankedAUROC, binary_auroc, resample_counts
from cfbench.metrics.cmig import DEFAULT_RETENTION_TERMS, cmig_from_metrics
from cfbench.metrics.divergence import KL_FORMULAS, pathology_kl
from cfbench.metrics.fid import FrechetDistance
from cfbench.metrics.effect_size import effect_errors
from cfbench.metrics.identity import attribute_changes
from cfbench.metrics.realism import relative_feature_distance
from cfbench.metrics.regression import pearson_r
from cfbench.metrics.score import SCORE_METRICS, cfbench_score

OPERATION_KINDS = ("add", "remove", "change")
logger = logging.getLogger(__name__)


@dataclass
class SampleTable:
    """Per-sample values of one evaluated run; row i of every array is ``sample_ids[i]``.

    labels: (N, 5) target-study CheXpert labels (1, 0, -1, NaN blank), columns EVALUATED_FINDINGS.
    race: (N,) index into ``race_classes``, -1 where unknown or outside the evaluator's classes.
    sex_male: (N,) 1.0 male, 0.0 female, NaN unknown. age: (N,) years, NaN unknown.
    generated / real: evaluator outputs on generated / real target images (keys of cfbench.api.evaluator).
    pixel: per-sample pixel measures, NaN where undefined for that sample.
    explanations / reference_explanations: the model's explanation and the dataset's reference text
    (None where absent), for the ProgEmu text metrics.
    inputs: evaluator outputs on the input (prior) images (no features), for effect size and identity change.
    edits: (N, 5) per evaluated finding +1 added, -1 removed, 0 level changed, NaN not edited (None: unknown).
    """

    sample_ids: list[str]
    operations: list[tuple[str, ...]]
    labels: np.ndarray
    race: np.ndarray
    sex_male: np.ndarray
    age: np.ndarray
    race_classes: tuple[str, ...]
    generated: dict[str, np.ndarray] = field(default_factory=dict)
    real: dict[str, np.ndarray] = field(default_factory=dict)
    pixel: dict[str, np.ndarray] = field(default_factory=dict)
    explanations: list[str | None] = field(default_factory=list)
    reference_explanations: list[str | None] = field(default_factory=list)
    anchor_age: np.ndarray | None = None  # (N,) MIMIC-IV anchor_age, NaN unknown; None: the dataset has none
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    edits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.sample_ids)

    def subset(self, rows: np.ndarray) -> "SampleTable":
        return SampleTable(
            sample_ids=[self.sample_ids[i] for i in rows],
            operations=[self.operations[i] for i in rows],
            labels=self.labels[rows], race=self.race[rows], sex_male=self.sex_male[rows], age=self.age[rows],
            race_classes=self.race_classes,
            generated={k: v[rows] for k, v in self.generated.items()},
            real={k: v[rows] for k, v in self.real.items()},
            pixel={k: v[rows] for k, v in self.pixel.items()},
            explanations=[self.explanations[i] for i in rows] if self.explanations else [],
            reference_explanations=[self.reference_explanations[i] for i in rows] if self.reference_explanations else [],
            anchor_age=None if self.anchor_age is None else self.anchor_age[rows],
            inputs={k: v[rows] for k, v in self.inputs.items()},
            edits=None if self.edits is None else self.edits[rows],
        )


Statistic = Callable[[np.ndarray], float]


def _macro_ovr_auroc(probabilities: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    return float(np.mean([binary_auroc(labels == k, probabilities[:, k]) for k in range(num_classes)]))


def _statistics(table: SampleTable, protocol: Protocol) -> tuple[dict[str, Statistic], dict[str, str], dict]:
    """statistic(indices) for every metric the table supports, the reason for each one it does not, and
    the samples each metric leaves out (no known race, sex or finite age) with the reason."""
    statistics: dict[str, Statistic] = {}
    skipped: dict[str, str] = {}
    excluded: dict[str, dict] = {}
    generated = table.generated
    has_labels = not np.isnan(table.labels).all()
    if "pathology" in generated and has_labels:
        auroc = PathologyAUROC(EVALUATED_FINDINGS, protocol.label_policy)
        auroc.update(generated["pathology"], table.labels)
        f1 = PathologyF1(EVALUATED_FINDINGS, protocol.f1_threshold, protocol.label_policy)
        f1.update(generated["pathology"], table.labels)
        statistics["pathology_mean_auroc"] = auroc.compute_on
        statistics["f1_macro"] = f1.compute_on
        for finding in EVALUATED_FINDINGS:
            statistics[f"pathology_auroc/{finding}"] = lambda i, f=finding: auroc.compute_on(i, finding=f)
            statistics[f"f1/{finding}"] = lambda i, f=finding: f1.compute_on(i, finding=f)
    elif "pathology" in generated:
        skipped["pathology_mean_auroc"] = "the dataset has no CheXpert label columns for the target study"
    k = len(table.race_classes)
    age, age_what = table.age, "a known, finite age"
    if protocol.age_reference == "anchor":
        age = np.full(len(table), np.nan) if table.anchor_age is None else table.anchor_age
        age_what = "a known anchor_age" + (" (the dataset has no anchor_age column)" if table.anchor_age is None else "")
    retention = (  # name, evaluator output, truth, which samples have a truth, metric(predicted, truth)
        ("race_auroc", "race", table.race, table.race >= 0, lambda p, t: _macro_ovr_auroc(p, t, k),
         f"a race in {list(table.race_classes)}"),
        ("sex_auroc", "sex", table.sex_male, ~np.isnan(table.sex_male), lambda p, t: binary_auroc(t, p), "a known sex"),
        ("age_pearson", "age", age, np.isfinite(age), pearson_r, age_what),
    )
    for name, output, truth, valid, metric, what in retention:
        if output not in generated:
            continue
        if (~valid).any():
            excluded[name] = {"n_excluded": int((~valid).sum()), "reason": f"samples without {what}"}
        if valid.sum() < 2:
            skipped[name] = f"fewer than 2 samples with {what}"
            continue
        predicted = generated[output]
        statistics[name] = lambda i, p=predicted, t=truth, v=valid, m=metric: m(p[i[v[i]]], t[i[v[i]]])
    if "pathology" in generated and "pathology" in table.real:
        p_real, q_generated = table.real["pathology"], generated["pathology"]
        statistics["kl_divergence"] = lambda i: float(
            pathology_kl(p_real[i].mean(axis=0), q_generated[i].mean(axis=0), protocol.kl_variant).sum())
    clip_reference = "embedding" if protocol.clip_i_variant == "image-image" else "text_embedding"
    if "embedding" in generated and clip_reference in table.real:
        cosines = _cosine(generated["embedding"], table.real[clip_reference])
        statistics["clip_i"] = lambda i: float(cosines[i].mean())
    for name, values in per_sample_measures(table).items():
        if np.isfinite(values).any():
            statistics[name] = lambda i, v=values: _nanmean(v[i])
    statistics.update(_text_statistics(table, skipped))
    return statistics, skipped, excluded


def per_sample_measures(table: SampleTable) -> dict[str, np.ndarray]:
    """Every metric that is a mean over samples, as its per-sample column: the pixel measures, and from the
    evaluator outputs the effect size (:mod:`cfbench.metrics.effect_size`; needs the outputs on the inputs and
    the edits), the attribute changes (:mod:`cfbench.metrics.identity`) and the feature distance to the real
    target (:mod:`cfbench.metrics.realism`)."""
    columns = dict(table.pixel)
    generated, inputs, real = table.generated, table.inputs, table.real
    if table.edits is not None and all("pathology" in outputs for outputs in (generated, inputs, real)):
        error, bias = effect_errors(np.asarray(generated["pathology"], np.float64), inputs["pathology"],
                                    real["pathology"], table.edits)
        columns.update(effect_error=error, effect_bias=bias)
    columns.update(attribute_changes(generated, inputs))
    if "features" in generated and "features" in real:
        columns["feature_distance"] = relative_feature_distance(generated["features"], real["features"])
    return columns


def _score_statistic(available: set[str]) -> tuple[Callable[[dict], float] | None, str | None]:
    """cfbench_score as a function of the metric values of one replicate, or (None, why it is unavailable)."""
    result = cfbench_score({name: 0.0 for name in SCORE_METRICS if name in available})
    if result.missing:
        return None, f"no metric feeds the score term(s) {result.missing} (needs {list(SCORE_METRICS)})"
    return (lambda values: cfbench_score(values).value), None


def _batched_statistics(table: SampleTable, protocol: Protocol, statistics: dict[str, Statistic]) -> list:
    """The per-finding AUROC and F1, the retention AUROCs and the pixel measures' means, evaluated for many
    replicates at once; the names they give are taken out of ``statistics`` (which keeps the per-index
    forms for the others).

    A replicate is a vector of counts (how often each sample was drawn); each finding's order is computed
    once for the whole bootstrap (:class:`cfbench.metrics.classification.RankedAUROC`) and the five F1s
    come from one product of the counts with indicator columns, so no replicate sorts or recomputes a
    finding it does not report. The values are the per-index statistics' (tested to 1e-12)."""
    batched = []
    n = len(table)
    generated = table.generated
    finding_names = [f"pathology_auroc/{f}" for f in EVALUATED_FINDINGS] + [f"f1/{f}" for f in EVALUATED_FINDINGS]
    if all(name in statistics for name in finding_names):
        auroc = PathologyAUROC(EVALUATED_FINDINGS, protocol.label_policy)
        auroc.update(generated["pathology"], table.labels)
        f1 = PathologyF1(EVALUATED_FINDINGS, protocol.f1_threshold, protocol.label_policy)
        f1.update(generated["pathology"], table.labels)

        def pathology(index_matrix: np.ndarray) -> dict[str, np.ndarray]:
            counts = resample_counts(index_matrix, n)
            values = np.concatenate([auroc.compute_on_counts(counts), f1.compute_on_counts(counts)], axis=1)
            return dict(zip(finding_names, values.T))

        batched.append(pathology)
        for name in finding_names:
            del statistics[name]
    retention = []  # name, [(rows used, ranked AUROC)] per class (macro mean over them)
    if "race_auroc" in statistics:
        valid = np.flatnonzero(table.race >= 0)
        probabilities, truth = generated["race"][valid], table.race[valid]
        retention.append(("race_auroc", valid, [RankedAUROC(truth == k, probabilities[:, k])
                                                for k in range(len(table.race_classes))]))
    if "sex_auroc" in statistics:
        valid = np.flatnonzero(~np.isnan(table.sex_male))
        retention.append(("sex_auroc", valid, [RankedAUROC(table.sex_male[valid], generated["sex"][valid])]))
    if retention:
        def retained(index_matrix: np.ndarray) -> dict[str, np.ndarray]:
            counts = resample_counts(index_matrix, n)
            return {name: np.mean([ranked.from_counts(counts[:, valid]) for ranked in per_class], axis=0)
                    for name, valid, per_class in retention}

        batched.append(retained)
        for name, _, _ in retention:
            del statistics[name]
    measures = per_sample_measures(table)
    pixel_names = [name for name in measures if name in statistics]
    if pixel_names:  # means over the finite values: two products of the counts with the columns
        columns = np.stack([np.asarray(measures[name], np.float64) for name in pixel_names], axis=1)
        finite = np.isfinite(columns)
        finite_values = np.where(finite, columns, 0.0)

        def pixel_means(index_matrix: np.ndarray) -> dict[str, np.ndarray]:
            counts = resample_counts(index_matrix, n).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):  # no finite value drawn: NaN, as _nanmean
                means = (counts @ finite_values) / (counts @ finite)
            return dict(zip(pixel_names, means.T))

        batched.append(pixel_means)
        for name in pixel_names:
            del statistics[name]
    return batched


def _text_statistics(table: SampleTable, skipped: dict[str, str]) -> dict[str, Statistic]:
    """BLEU-3 / METEOR / ROUGE-L where both a generated and a reference explanation exist."""
    pairs = [i for i, (h, r) in enumerate(zip(table.explanations, table.reference_explanations)) if h and r]
    if not pairs:
        if any(table.explanations) or any(table.reference_explanations):
            skipped["text"] = "no sample has both a generated explanation and a reference explanation"
        return {}
    from cfbench.metrics.text import TextSimilarity

    try:
        text = TextSimilarity()
    except ImportError as error:  # an install without the `text` extra: the metrics are skipped, with the reason
        skipped["text"] = str(error)
        return {}
    text.update([table.explanations[i] for i in pairs], [table.reference_explanations[i] for i in pairs])
    local = np.full(len(table), -1, np.int64)
    local[pairs] = np.arange(len(pairs))
    return {metric: (lambda i, m=metric: text.compute_on(local[i][local[i] >= 0], m)) for metric in text.METRICS}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays, in [-1, 1]."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _cmig_terms(protocol: Protocol, available: set[str]) -> tuple[tuple[str, ...], tuple[str, ...], list[str]]:
    """The configured CMIG terms that this run can provide; missing terms are reported. With the default
    retention terms on data without race (NIH), sex AUROC stands in for race AUROC."""
    retention_terms = protocol.retention_terms
    if (retention_terms == DEFAULT_RETENTION_TERMS and "race_auroc" not in available and "sex_auroc" in available):
        retention_terms = tuple("sex_auroc" if t == "race_auroc" else t for t in retention_terms)
    accuracy = tuple(t for t in protocol.accuracy_terms if t in available)
    retention = tuple(t for t in retention_terms if t in available)
    missing = [t for t in (*protocol.accuracy_terms, *retention_terms) if t not in available]
    return accuracy, retention, missing


def score(table: SampleTable, protocol: Protocol = Protocol(), breakdown: bool = True, fid: bool = True,
          replicates: dict[str, np.ndarray] | None = None) -> dict:
    """Every metric with its interval, the CMIG/KL/pathology components, and per-operation breakdowns.
    ``replicates``: a dict that receives every bootstrapped metric's replicate values (FID's excepted; see
    :func:`cfbench.metrics.bootstrap.bootstrap_many`)."""
    if len(table) == 0:
        raise ValueError("no samples to score")
    statistics, skipped, excluded = _statistics(table, protocol)
    derived = {}
    # the means over findings are functions of the per-finding values of the same replicate: derive them
    # instead of computing every finding's AUROC and F1 twice per replicate
    for mean_name, prefix in (("pathology_mean_auroc", "pathology_auroc/"), ("f1_macro", "f1/")):
        if mean_name in statistics:
            del statistics[mean_name]
            parts = [f"{prefix}{finding}" for finding in EVALUATED_FINDINGS]
            derived[mean_name] = lambda values, parts=parts: float(np.mean([values[p] for p in parts]))
    accuracy, retention, missing_terms = _cmig_terms(protocol, set(statistics) | set(derived))
    if accuracy and retention:
        derived["cmig"] = lambda values: cmig_from_metrics(values, accuracy, retention).value
    else:
        skipped["cmig"] = f"CMIG terms unavailable: {missing_terms}"
    score_of, why = _score_statistic(set(statistics))
    if score_of is not None:
        derived["cfbench_score"] = score_of
    else:
        skipped["cfbench_score"] = why
    batched = _batched_statistics(table, protocol, statistics)
    intervals = bootstrap_many(statistics, len(table), protocol.bootstrap_resamples, protocol.confidence_level,
                               protocol.bootstrap_seed, derived=derived, batched=batched,
                               keep_replicates=replicates)
    if fid and "features" in table.generated and "features" in table.real and len(table) >= 2:
        try:
            intervals["fid"] = _fid_interval(table, protocol)
        except ValueError as error:  # e.g. ill-conditioned covariances at N << feature dimension
            skipped["fid"] = f"FID could not be computed on {len(table)} samples: {error}"
    realism_components = {}
    if fid:  # KID, precision/recall, density/coverage on FID's features (not in the per-operation rescoring)
        realism_intervals, realism_components, realism_skipped = realism_scores(table, protocol)
        intervals.update(realism_intervals)
        skipped.update(realism_skipped)
    metrics = {name: _entry(ci) for name, ci in sorted(intervals.items())}
    for name, exclusion in excluded.items():
        if breakdown:  # the top-level call, not the per-operation rescoring
            logger.warning("%s: %d of %d samples excluded (%s)", name, exclusion["n_excluded"], len(table),
                           exclusion["reason"])
        if name in metrics:  # the metric's n counts the samples it used, and says how many it left out and why
            metrics[name].update(n=len(table) - exclusion["n_excluded"], **exclusion)
    report = {
        "n": len(table),
        "metrics": metrics,
        "skipped": skipped,
        "excluded": excluded,
        "components": {**_components(table, protocol, intervals, accuracy, retention, missing_terms),
                       **realism_components},
    }
    if breakdown:
        report["by_operation"] = _by_operation(table, protocol)
    return report


def _fid_interval(table: SampleTable, protocol: Protocol) -> ConfidenceInterval:
    """FID with a bias-shifted percentile bootstrap interval.

    FID is biased upwards at finite N, and a resample (about 63 % distinct samples) more so, so the plain
    percentile interval sits above the estimate and may not contain it. The interval is therefore moved
    down by the bootstrap bias estimate ``replicate_mean - value`` (and floored at 0, FID's minimum);
    ``replicate_mean`` stays recorded, so the unshifted interval is recoverable."""
    fid = _fid_metric(table)
    value = fid.compute()
    if protocol.fid_bootstrap_resamples <= 0:
        return ConfidenceInterval(value, math.nan, math.nan, protocol.confidence_level, 0, len(table))
    # the replicates run on worker threads with single-threaded BLAS, from the same index sets as bootstrap_many
    replicates = fid.compute_on_many(resample_indices(len(table), protocol.fid_bootstrap_resamples,
                                                      protocol.bootstrap_seed), nan_on_error=True)
    interval = interval_from_replicates(value, replicates, protocol.confidence_level, len(table))
    bias = interval.replicate_mean - value
    low, high = (max(0.0, interval.low - bias), max(0.0, interval.high - bias)) if math.isfinite(bias) else (
        math.nan, math.nan)
    return ConfidenceInterval(value, low, high, interval.level, interval.n_resamples, interval.n, interval.n_skipped,
                              interval.replicate_mean)


def _fid_metric(table: SampleTable) -> FrechetDistance:
    """FID over the table's real and generated features, kept per sample for paired resampling."""
    fid = FrechetDistance(num_features=table.generated["features"].shape[1], keep_features=True)
    fid.update(table.real["features"], real=True)
    fid.update(table.generated["features"], real=False)
    return fid


def _entry(ci: ConfidenceInterval) -> dict:
    def clean(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    return {"value": clean(ci.value), "ci_low": clean(ci.low), "ci_high": clean(ci.high), "level": ci.level,
            "n": ci.n, "n_resamples": ci.n_resamples, "n_skipped": ci.n_skipped,
            "replicate_mean": clean(ci.replicate_mean)}


def _components(table: SampleTable, protocol: Protocol, intervals: dict, accuracy, retention, missing) -> dict:
    components: dict = {}
    generated = table.generated
    if "pathology_mean_auroc" in intervals:
        auroc = PathologyAUROC(EVALUATED_FINDINGS, protocol.label_policy)
        auroc.update(generated["pathology"], table.labels)
        computed = auroc.compute()
        components["pathology"] = {"n": computed["n"], "reasons": computed["reasons"], "policy": computed["policy"]}
    if "cmig" in intervals:
        values = {name: ci.value for name, ci in intervals.items()}
        result = cmig_from_metrics(values, accuracy, retention).as_dict()
        result["terms_missing"] = missing
        result["clipped_to_zero"] = bool(result["clipped"]) and result["value"] == 0.0
        components["cmig"] = result
    if "cfbench_score" in intervals:
        values = {name: ci.value for name, ci in intervals.items()}
        components["cfbench_score"] = cfbench_score(values).as_dict()
    if "kl_divergence" in intervals:
        p = table.real["pathology"].mean(axis=0)
        q = generated["pathology"].mean(axis=0)
        components["kl_divergence"] = {
            "p_real": dict(zip(EVALUATED_FINDINGS, p.tolist())),
            "q_generated": dict(zip(EVALUATED_FINDINGS, q.tolist())),
            "per_finding": dict(zip(EVALUATED_FINDINGS, pathology_kl(p, q, protocol.kl_variant).tolist())),
            "variant": protocol.kl_variant,
            "formula": KL_FORMULAS[protocol.kl_variant],
        }
    if "race_auroc" in intervals:
        valid = table.race >= 0
        components["race"] = {"classes": list(table.race_classes),
                              "counts": np.bincount(table.race[valid], minlength=len(table.race_classes)).tolist(),
                              "excluded": int((~valid).sum())}
    return components


def _by_operation(table: SampleTable, protocol: Protocol) -> dict:
    """Point estimates on the samples whose instruction contains each operation kind (no intervals, no FID:
    FID on a few hundred samples of 1024-d features says little and costs a d x d eigen-decomposition)."""
    quick = replace(protocol, bootstrap_resamples=1, fid_bootstrap_resamples=0)
    breakdown = {}
    for kind in OPERATION_KINDS:
        rows = np.array([i for i, ops in enumerate(table.operations) if kind in ops], dtype=np.int64)
        if len(rows) < 2:
            breakdown[kind] = {"n": int(len(rows))}
            continue
        sub = score(table.subset(rows), quick, breakdown=False, fid=False)
        breakdown[kind] = {"n": int(len(rows)),
                           **{name: entry["value"] for name, entry in sub["metrics"].items()}}
    return breakdown


def compare_tables(a: SampleTable, b: SampleTable, protocol: Protocol = Protocol(),
                   metrics: "set[str] | None" = None) -> dict:
    """Paired differences a - b with intervals, on the samples both tables share (same bootstrap indices);
    ``metrics``: only these (default: every metric both tables have)."""
    shared = sorted(set(a.sample_ids) & set(b.sample_ids), key=a.sample_ids.index)
    if len(shared) < 2:
        raise ValueError(f"the runs share {len(shared)} samples; a paired comparison needs at least 2")
    rows_a = np.array([a.sample_ids.index(s) for s in shared])
    rows_b = np.array([b.sample_ids.index(s) for s in shared])
    sub_a, sub_b = a.subset(rows_a), b.subset(rows_b)
    stats_a, stats_b = _with_cmig(sub_a, protocol), _with_cmig(sub_b, protocol)
    differences = {}
    for name in sorted(set(stats_a) & set(stats_b) & (set(stats_a) if metrics is None else set(metrics))):
        resamples = protocol.fid_bootstrap_resamples if name == "fid" else protocol.bootstrap_resamples
        if resamples <= 0:
            continue
        ci = paired_difference_ci(stats_a[name], stats_b[name], len(shared), resamples,
                                  protocol.confidence_level, protocol.bootstrap_seed)
        differences[name] = _entry(ci)
    return {"n_shared": len(shared), "sample_ids": shared, "differences": differences}


def _with_cmig(table: SampleTable, protocol: Protocol) -> dict[str, Statistic]:
    """The table's statistics plus CMIG and FID as statistics of the indices (for paired differences)."""
    statistics, _, _ = _statistics(table, protocol)
    accuracy, retention, _ = _cmig_terms(protocol, set(statistics))
    if accuracy and retention:
        components = {name: statistics[name] for name in (*accuracy, *retention)}
        statistics["cmig"] = lambda i: cmig_from_metrics({n: f(i) for n, f in components.items()},
                                                         accuracy, retention).value
    score_of, _ = _score_statistic(set(statistics))
    if score_of is not None:
        parts = {name: statistics[name] for name in SCORE_METRICS if name in statistics}
        statistics["cfbench_score"] = lambda i: score_of({n: f(i) for n, f in parts.items()})
    if "features" in table.generated and "features" in table.real:
        statistics["fid"] = _nan_on_error(_fid_metric(table).compute_on)
    return statistics


def _nan_on_error(statistic: Statistic) -> Statistic:
    """A replicate whose FID is numerically undefined counts as skipped (NaN), not as a crash."""

    def guarded(indices: np.ndarray) -> float:
        try:
            return statistic(indices)
        except ValueError:
            return math.nan

    return guarded
