"""The metric vocabulary: every name that can appear in ``metrics.json``, with its short title, its
direction and what it measures. Defined once; evaluation, leaderboards, plots and the console read it here.

Per-finding metrics are named ``<family>/<Finding>`` (``pathology_auroc/Cardiomegaly``, ``f1/Edema``) and
take their family's direction.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricName:
    """One metric.

    name: the key in metrics.json.
    title: the short display name (table headers, plots, console).
    higher_is_better: True / False, or None for descriptive measures that are neither ranked nor bolded.
    unit: what the number is on the metrics.json scale ("[0, 1]", "nats", "0-100", "pixel intensity").
    description: one line on what is compared with what.
    """

    name: str
    title: str
    higher_is_better: bool | None
    unit: str
    description: str

    @property
    def arrow(self) -> str:
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better]


_METRICS = (
    MetricName("pathology_mean_auroc", "Patho", True, "AUROC in [0, 1]",
               "mean AUROC over the 5 findings: evaluator probabilities on generated images vs target labels"),
    MetricName("race_auroc", "Race", True, "AUROC in [0, 1]",
               "one-vs-rest macro AUROC of the race/group evaluator on generated images vs the patient's group"),
    MetricName("sex_auroc", "Sex", True, "AUROC in [0, 1]",
               "AUROC of P(male) on generated images vs the patient's sex"),
    MetricName("age_pearson", "Age", True, "Pearson r in [-1, 1]",
               "Pearson r of predicted age on generated images vs the patient's age"),
    MetricName("cmig", "CMIG", True, "0-100",
               "sqrt(a_bar * f_bar), geometric means of accuracy and retention terms, 0-100 scale"),
    MetricName("kl_divergence", "KL", False, "nats",
               "sum over findings of Bernoulli KL(P_real || Q_generated) of mean probabilities, nats"),
    MetricName("fid", "FID", False, "squared feature distance",
               "Frechet distance of evaluator features, real target vs generated images"),
    MetricName("kid", "KID", False, "squared kernel distance (MMD^2)",
               "Kernel Inception Distance: unbiased MMD^2 of evaluator features under the cubic polynomial kernel, "
               "real target vs generated images (all samples; subset mean/std in components)"),
    MetricName("manifold_precision", "Precision", True, "[0, 1]",
               "improved precision (Kynkaanniemi 2019): fraction of generated images inside the k-NN balls of real "
               "target features (fidelity)"),
    MetricName("manifold_recall", "Recall", True, "[0, 1]",
               "improved recall (Kynkaanniemi 2019): fraction of real target images inside the k-NN balls of "
               "generated features (diversity / coverage)"),
    MetricName("density", "Density", None, ">= 0 (about 1 when the distributions match)",
               "density (Naeem 2020): mean count of real k-NN balls holding a generated image, / k"),
    MetricName("coverage", "Coverage", True, "[0, 1]",
               "coverage (Naeem 2020): fraction of real target images whose k-NN ball holds a generated image"),
    MetricName("seed_ms_ssim", "Seed MS-SSIM", None, "[0, 1]",
               "MS-SSIM between the outputs of two run seeds per input (--seeds 2); 1 = ignores its seed, as the "
               "unique true counterfactual (zero spread)"),
    MetricName("seed_mae", "Seed spread", None, "pixel intensity in [0, 1]",
               "mean |output(seed S) - output(seed S+1)| per input (--seeds 2); 0 = zero spread"),
    MetricName("nn_ratio_features", "NN ratio (features)", None, "ratio >= 0",
               "distance of the output to its nearest training image over its input's, evaluator features (near 0: "
               "the output is a training image)"),
    MetricName("nn_ratio_pixels", "NN ratio (pixels)", None, "ratio >= 0",
               "the same in pixel space (RMS difference of 32 px thumbnails)"),
    MetricName("closer_to_train_features", "Closer to train (features)", None, "fraction in [0, 1]",
               "fraction of outputs closer to a training image than to their own input, evaluator features (not "
               "ranked: a right edit moves the features too; the phantom demo's true counterfactual: 0.81)"),
    MetricName("closer_to_train_pixels", "Closer to train (pixels)", None, "fraction in [0, 1]",
               "fraction of outputs closer to a training image than to their own input, 32 px thumbnails (not "
               "ranked; the phantom demo's true counterfactual: 0.12)"),
    MetricName("clip_i", "CLIP-I", True, "cosine in [-1, 1]",
               "mean cosine similarity of BiomedCLIP image embeddings, generated vs real target (ProgEmu CLIP-I)"),
    MetricName("f1_macro", "F1", True, "[0, 1]", "mean F1 over the 5 findings at the protocol's threshold"),
    MetricName("bleu3", "BLEU-3", True, "[0, 1]",
               "corpus BLEU (1- to 3-grams) of generated explanations vs reference explanations"),
    MetricName("meteor", "METEOR", True, "[0, 1]", "mean sentence METEOR of generated vs reference explanations"),
    MetricName("rouge_l", "ROUGE-L", True, "[0, 1]", "mean ROUGE-L F-measure of generated vs reference explanations"),
    MetricName("mae_to_target", "MAE to target", None, "pixel intensity in [0, 1]",
               "mean |generated - real target image| (pose differs; not 0 for a perfect edit)"),
    MetricName("mae_to_true_counterfactual", "MAE to true CF", False, "pixel intensity in [0, 1]",
               "mean |generated - exact counterfactual| (phantoms only; 0 is perfect)"),
    MetricName("change_inside_lesion", "Change inside lesion", None, "pixel intensity in [0, 1]",
               "mean |generated - input| inside the true lesion-change mask (phantoms only)"),
    MetricName("change_outside_lesion", "Change outside lesion", False, "pixel intensity in [0, 1]",
               "mean |generated - input| outside the true lesion-change mask (phantoms only; 0 = local)"),
    MetricName("guidance_auroc", "Guidance map AUROC", True, "AUROC in [0, 1]",
               "AUROC of the guidance map as a pixel-wise detector of the true lesion-change mask, mean over "
               "samples (phantoms only; models that return guidance maps)"),
    MetricName("change_inside_pseudo_mask", "Change inside pseudo mask", None, "pixel intensity in [0, 1]",
               "mean |generated - input| inside the pseudo mask of the instruction's findings"),
    MetricName("change_outside_pseudo_mask", "Change outside pseudo mask", False, "pixel intensity in [0, 1]",
               "mean |generated - input| outside the pseudo mask of the instruction's findings "
               "(samples whose findings have no mask are skipped)"),
    MetricName("cfbench_score", "cfbench score", True, "0-100",
               "100 x geometric mean of effectiveness, preservation, minimality and realism terms, from the input, "
               "instruction, real target and pseudo masks only (cfbench.metrics.score)"),
    MetricName("effect_error", "Effect error", False, "probability in [0, 1]",
               "mean |change of the evaluator's probability of each edited finding, input -> generated, minus the "
               "same change input -> real target|"),
    MetricName("effect_bias", "Effect bias", None, "probability in [-1, 1]",
               "mean signed effect error in the edit's direction: > 0 over-edits, < 0 under-edits"),
    MetricName("age_change", "Age change", False, "years",
               "mean |predicted age on generated - predicted age on input|"),
    MetricName("race_change", "Race change", False, "total variation in [0, 1]",
               "mean total-variation distance of the race (phantoms: group) probabilities, generated vs input"),
    MetricName("sex_change", "Sex change", False, "probability in [0, 1]",
               "mean |P(male) on generated - P(male) on input|"),
    MetricName("feature_distance", "Feature distance", False, "relative distance, >= 0",
               "mean ||features(generated) - features(real target)|| / ||features(real target)|| (evaluator features)"),
    MetricName("relative_change_outside_lesion", "Rel. change outside lesion", False, "fraction, >= 0",
               "sum |generated - input| outside the true lesion-change mask / sum of the input there (phantoms only)"),
    MetricName("w1_outside_lesion", "W1 outside lesion", False, "pixel intensity in [0, 1]",
               "Wasserstein-1 distance of the intensity distributions of generated and input outside the true "
               "lesion-change mask (phantoms only)"),
    MetricName("relative_change_outside_pseudo_mask", "Rel. change outside pseudo mask", False, "fraction, >= 0",
               "sum |generated - input| outside the pseudo mask / sum of the input there"),
    MetricName("w1_outside_pseudo_mask", "W1 outside pseudo mask", False, "pixel intensity in [0, 1]",
               "Wasserstein-1 distance of the intensity distributions of generated and input outside the pseudo mask"),
)

METRICS: dict[str, MetricName] = {metric.name: metric for metric in _METRICS}
"""The headline metrics, in protocol order (the console and metrics.json list them in this order)."""

_FAMILIES = {
    "pathology_auroc": MetricName("pathology_auroc", "AUROC", True, "AUROC in [0, 1]",
                                  "AUROC of the evaluator's probability for one finding vs its target label"),
    "f1": MetricName("f1", "F1", True, "[0, 1]", "F1 of one finding at the protocol's threshold"),
}


def metric_name(name: str) -> MetricName:
    """The entry of a metric, per-finding ones included (``pathology_auroc/Edema`` -> title "AUROC Edema")."""
    if name in METRICS:
        return METRICS[name]
    family, sep, finding = name.partition("/")
    if sep and family in _FAMILIES:
        base = _FAMILIES[family]
        return MetricName(name, f"{base.title} {finding}", base.higher_is_better, base.unit,
                          f"{base.description} ({finding})")
    raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)} and per-finding "
                   f"{', '.join(f + '/<Finding>' for f in _FAMILIES)}")


def descriptions(names) -> dict[str, str]:
    """``{name: description}`` for the known headline metrics among ``names`` (for metrics.json)."""
    return {name: METRICS[name].description for name in METRICS if name in set(names)}
