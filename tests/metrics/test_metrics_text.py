import numpy as np
import pytest

pytest.importorskip("nltk")
pytest.importorskip("rouge_score")

from nltk.translate.bleu_score import corpus_bleu  # noqa: E402

from cfbench.metrics.text import TextSimilarity, tokenize  # noqa: E402


def lcs(a, b):
    table = np.zeros((len(a) + 1, len(b) + 1), int)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1, j + 1] = table[i, j] + 1 if x == y else max(table[i, j + 1], table[i + 1, j])
    return table[-1, -1]


def test_identical_texts_score_one_and_missing_are_skipped():
    metric = TextSimilarity()
    text = "The left pleural effusion has increased in size since the prior study."
    metric.update([text, None, "x"], [text, "ref", ""])
    result = metric.compute()
    assert result["n"] == 1 and result["skipped"] == 2
    assert result["bleu3"] == pytest.approx(1.0) and result["rouge_l"] == pytest.approx(1.0)
    assert result["meteor"] > 0.99


def test_values_against_hand_computation_and_nltk():
    hypotheses = ["new small left effusion", "heart size is unchanged"]
    references = ["there is a new small left pleural effusion", "the heart size is stable"]
    metric = TextSimilarity()
    metric.update(hypotheses, references)
    result = metric.compute()
    expected_bleu = corpus_bleu([[tokenize(r)] for r in references], [tokenize(h) for h in hypotheses],
                                weights=(1 / 3, 1 / 3, 1 / 3))
    assert result["bleu3"] == pytest.approx(expected_bleu)
    # ROUGE-L F by hand (no stemming effects in these words): LCS / lengths, beta = 1
    f_scores = []
    for h, r in zip(hypotheses, references):
        h_tokens, r_tokens = h.split(), r.split()
        common = lcs(h_tokens, r_tokens)
        precision, recall = common / len(h_tokens), common / len(r_tokens)
        f_scores.append(2 * precision * recall / (precision + recall))
    assert result["rouge_l"] == pytest.approx(np.mean(f_scores))
    assert 0.0 < result["meteor"] < 1.0
    assert metric.compute_on(np.array([0, 0]), "rouge_l") == pytest.approx(f_scores[0])
