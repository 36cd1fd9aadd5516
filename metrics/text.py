"""Text metrics of the ProgEmu protocol: generated explanations vs reference interpretation texts.

- ``bleu3``: corpus BLEU with uniform weights over 1- to 3-grams (nltk ``corpus_bleu``, no smoothing).
- ``meteor``: mean sentence METEOR (nltk ``meteor_score``: exact, Porter-stem and, when nltk's WordNet
  data is installed, synonym matches; without it synonyms are not matched, and the result says so in
  ``meteor_synonyms``).
- ``rouge_l``: mean ROUGE-L F-measure (Google's ``rouge-score`` with its own tokenizer: lower case,
  alphanumeric tokens, Porter stemming).

All three lie in [0, 1]. For BLEU and METEOR, texts are lower-cased and split into words and punctuation
by one regular expression (no tokenizer data needed). Needs the ``text`` extra
(``pip install cfbench[text]``). Samples without a generated or a reference text are skipped and counted.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


class _NoSynonyms:
    """Stands in for WordNet when its data is not installed: no synonym matches."""

    def synsets(self, *args, **kwargs):
        return []


def _wordnet():
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet, True
    except LookupError:
        return _NoSynonyms(), False


class TextSimilarity:
    """BLEU-3, METEOR and ROUGE-L of hypotheses (generated explanations) against references.

    ``update(hypotheses, references)``: two equal-length lists of strings (None = missing). ``compute()``
    -> dict with ``bleu3``, ``meteor``, ``rouge_l`` (NaN when no pair), ``n`` (pairs scored), ``skipped``
    (pairs with a missing text), ``meteor_synonyms``. Keeps the token lists (O(N) short texts) for the
    corpus-level BLEU and ``compute_on(indices, metric)`` for the bootstrap.
    """

    METRICS = ("bleu3", "meteor", "rouge_l")

    def __init__(self) -> None:
        try:
            from nltk.translate.bleu_score import corpus_bleu
            from nltk.translate.meteor_score import single_meteor_score
            from rouge_score import rouge_scorer
        except ImportError as error:  # pragma: no cover - depends on the installed extras
            raise ImportError("text metrics need the 'text' extra: pip install 'cfbench[text]'") from error
        self._corpus_bleu = corpus_bleu
        self._meteor = single_meteor_score
        self._rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        self._wordnet, self.meteor_synonyms = _wordnet()
        self._hypotheses: list[list[str]] = []
        self._references: list[list[str]] = []
        self._meteor_scores: list[float] = []
        self._rouge_scores: list[float] = []
        self.skipped = 0

    def update(self, hypotheses: Sequence[str | None], references: Sequence[str | None]) -> None:
        if len(hypotheses) != len(references):
            raise ValueError(f"TextSimilarity: {len(hypotheses)} hypotheses but {len(references)} references")
        for hypothesis, reference in zip(hypotheses, references):
            if not hypothesis or not reference:
                self.skipped += 1
                continue
            hypothesis_tokens, reference_tokens = tokenize(hypothesis), tokenize(reference)
            self._hypotheses.append(hypothesis_tokens)
            self._references.append(reference_tokens)
            self._meteor_scores.append(
                self._meteor(reference_tokens, hypothesis_tokens, wordnet=self._wordnet))
            self._rouge_scores.append(self._rouge.score(reference, hypothesis)["rougeL"].fmeasure)

    @property
    def num_samples(self) -> int:
        return len(self._hypotheses)

    def compute_on(self, indices: np.ndarray, metric: str) -> float:
        if not len(indices):
            return math.nan
        if metric == "bleu3":
            return float(self._corpus_bleu([[self._references[i]] for i in indices],
                                           [self._hypotheses[i] for i in indices], weights=(1 / 3, 1 / 3, 1 / 3)))
        if metric == "meteor":
            return float(np.mean([self._meteor_scores[i] for i in indices]))
        if metric == "rouge_l":
            return float(np.mean([self._rouge_scores[i] for i in indices]))
        raise KeyError(f"TextSimilarity: unknown metric {metric!r}; known: {self.METRICS}")

    def compute(self) -> dict:
        everything = np.arange(self.num_samples)
        values = {metric: self.compute_on(everything, metric) for metric in self.METRICS}
        return {**values, "n": self.num_samples, "skipped": self.skipped, "meteor_synonyms": self.meteor_synonyms}
