"""Values reported in the papers, transcribed as printed, with their citation: never measured by cfbench.

Each :class:`ReportedTable` is one table of one paper: its citation, table number, caption (verbatim),
the test set it was computed on, and its rows with the values exactly as printed (strings, so that
``"0.10"`` stays ``0.10``; ``None`` where the paper prints a dash). The column keys are those of the
leaderboard layouts in :mod:`cfbench.leaderboard.table_model` (``instructx2x``: patho, race, age, cmig, kl, fid;
``progemu``: fid, clip_i, auroc, f1, bleu3, meteor, rouge_l).

Scales, as printed: InstructX2X gives AUROC and Pearson r x 100 and CMIG on 0-100; the scaling of its KL
divergence is not published (cfbench reports KL in nats, unscaled, so the KL columns are not comparable).
ProgEmu gives AUROC, F1 and the text scores on 0-1 and CLIP-I x 100. The papers' models ran on MIMIC-CXR /
ICG-CXR test sets that differ from any cfbench split: a reported row is context, not a comparison.

"InstructX2X v1" is the conference paper (MIMIC-EDIT-INSTRUCTION v1: 11,703 train / 200 validation /
1,933 holdout-test samples); "InstructX2X v2" is the extended paper, arXiv:2603.00423v1 (dataset v2:
19,204 train / 2,248 holdout / 334 test / 171 validation).
"""

from __future__ import annotations

from dataclasses import dataclass

INSTRUCTX2X_V1_CITATION = (
    "H. Min, T. You, H. Lee, Y. Cho, S. Cho. InstructX2X: An Interpretable Local Editing Model for "
    "Counterfactual Medical Image Generation (conference version, v1)")
INSTRUCTX2X_V2_CITATION = (
    "H. Min, T. You, H. Lee, Y. Cho, S. Cho. An Interpretable Local Editing Model for Counterfactual "
    "Medical Image Generation. arXiv:2603.00423v1, 28 Feb 2026 (InstructX2X v2)")
PROGEMU_CITATION = (
    "C. Ma, Y. Ji, J. Ye, L. Zhang, Y. Chen, T. Li, M. Li, J. He, H. Shan. Towards Interpretable "
    "Counterfactual Generation via Multimodal Autoregression (ProgEmu)")


@dataclass(frozen=True)
class ReportedRow:
    """One row of a paper's table. values: column key -> the number as printed, None for a dash.

    is_reference: the row is real images / ground truth (the papers bold only generated methods)."""

    model: str
    values: dict[str, str | None]
    is_reference: bool = False

    def value(self, key: str) -> float | None:
        text = self.values.get(key)
        return None if text is None else float(text)


@dataclass(frozen=True)
class ReportedTable:
    key: str          # short id, used in file names: "instructx2x-v1-table1"
    layout: str       # leaderboard layout the columns belong to: "instructx2x" or "progemu"
    short: str        # short source label for a table cell: "InstructX2X v1, Table 1"
    citation: str
    table: str        # "Table 1"
    caption: str      # verbatim
    test_set: str
    rows: tuple[ReportedRow, ...]
    dataset_kind: str = "mimic-edit-instruction"  # the dataset.json kind of the data it was measured on


def _row(model: str, keys: tuple[str, ...], printed: str, is_reference: bool = False) -> ReportedRow:
    """A row from the numbers as printed, whitespace-separated, '-' for a dash."""
    cells = printed.split()
    if len(cells) != len(keys):
        raise ValueError(f"{model}: {len(cells)} values for {len(keys)} columns")
    return ReportedRow(model, {k: None if c in ("-", "–", "—") else c for k, c in zip(keys, cells)}, is_reference)


_IX2X = ("patho", "race", "age", "cmig", "kl", "fid")
_PROGEMU = ("fid", "clip_i", "auroc", "f1", "bleu3", "meteor", "rouge_l")

INSTRUCTX2X_V1_TABLE1 = ReportedTable(
    key="instructx2x-v1-table1", layout="instructx2x", short="InstructX2X v1, Table 1",
    citation=INSTRUCTX2X_V1_CITATION, table="Table 1",
    caption="Comparison of InstructX2X with baseline methods across CMIG, KL divergence, and FID metrics. "
            "GT refers to Ground Truth. Best results are shown in bold.",
    test_set="MIMIC-EDIT-INSTRUCTION v1 test (P19 holdout, 1,933 samples)",
    rows=(
        _row("Real images(GT)", _IX2X, "84.15 99.60 88.62 90.77 - -", is_reference=True),
        _row("Roentgen", _IX2X, "82.87 50.48 18.71 65.63 51.71 35.96"),
        _row("LLM-CXR", _IX2X, "74.46 51.79 9.92 61.95 51.69 54.96"),
        _row("Radedit", _IX2X, "83.26 81.82 46.56 80.81 39.01 28.40"),
        _row("BiomedJourney", _IX2X, "80.44 83.23 68.95 81.47 22.18 13.77"),
        _row("InstructX2X", _IX2X, "80.76 98.81 83.91 88.03 9.69 2.88"),
    ),
)

INSTRUCTX2X_V1_TABLE2 = ReportedTable(
    key="instructx2x-v1-table2", layout="instructx2x", short="InstructX2X v1, Table 2 (ablation)",
    citation=INSTRUCTX2X_V1_CITATION, table="Table 2",
    caption="Ablation study on the effects of region-specific editing components on model performance. "
            "RelMap refers to Relevance Map and PsMask refers to Pseudo Mask. Best results are shown in bold.",
    test_set="MIMIC-EDIT-INSTRUCTION v1 test (P19 holdout, 1,933 samples)",
    rows=(
        _row("(a) no RelMap, no PsMask", _IX2X, "80.64 90.43 76.17 84.68 21.26 11.76"),
        _row("(b) RelMap only", _IX2X, "79.93 97.58 82.50 87.06 10.92 3.95"),
        _row("(c) PsMask only", _IX2X, "80.24 98.27 83.29 87.47 13.72 2.89"),
        _row("InstructX2X (RelMap + PsMask)", _IX2X, "80.76 98.81 83.91 88.03 9.69 2.88"),
    ),
)

INSTRUCTX2X_V2_TABLE2 = ReportedTable(
    key="instructx2x-v2-table2", layout="instructx2x", short="InstructX2X v2, Table 2",
    citation=INSTRUCTX2X_V2_CITATION, table="Table 2",
    caption="Quantitative comparison of InstructX2X with baselines and the ablation study. CMIG, KL "
            "divergence, and FID metrics are reported. Bold indicates the best performance among generated "
            "methods.",
    test_set="MIMIC-EDIT-INSTRUCTION v2 test set",
    rows=(
        _row("Real Images (GT)", _IX2X, "84.66 99.56 88.83 90.99 - -", is_reference=True),
        _row("LLM-CXR", _IX2X, "55.82 48.62 0.10 52.06 60.03 51.42"),
        _row("RoentGen", _IX2X, "84.53 53.15 18.60 67.74 48.92 35.19"),
        _row("RadEdit", _IX2X, "82.80 80.33 48.24 80.14 38.85 26.31"),
        _row("BiomedJourney", _IX2X, "81.27 79.07 64.37 80.31 20.45 12.46"),
        _row("InstructX2X (wo RSE)", _IX2X, "83.54 96.15 82.04 88.87 14.99 1.92"),
        _row("InstructX2X", _IX2X, "83.33 97.65 82.84 89.35 7.88 2.64"),
    ),
)

PROGEMU_TABLE1 = ReportedTable(
    key="progemu-table1", layout="progemu", short="ProgEmu, Table 1",
    citation=PROGEMU_CITATION, table="Table 1",
    caption="Quantitative evaluation for state-of-the-art methods on the ICG-CXR dataset. The best results are "
            "highlighted in bold and the second best results are underlined. ProgEmu^2: a cascade variant of "
            "ProgEmu for ablation study.",
    test_set="ICG-CXR test (760 quadruples)", dataset_kind="icg-cxr",
    rows=(
        _row("PIE", _PROGEMU, "37.60 34.03 0.7735 0.8894 - - -"),
        _row("BiomedJourney", _PROGEMU, "36.62 34.59 0.8385 0.8411 - - -"),
        _row("CXR-IRGen", _PROGEMU, "35.39 32.51 0.5236 0.7609 0.0448 0.2115 0.1846"),
        _row("ProgEmu^2 (cascade)", _PROGEMU, "29.51 35.00 0.7951 0.8853 0.2492 0.5660 0.2496"),
        _row("ProgEmu", _PROGEMU, "29.21 35.24 0.7921 0.8914 0.1241 0.4097 0.2606"),
    ),
)

ALL_TABLES: tuple[ReportedTable, ...] = (INSTRUCTX2X_V1_TABLE1, INSTRUCTX2X_V1_TABLE2, INSTRUCTX2X_V2_TABLE2,
                                         PROGEMU_TABLE1)
# the comparison tables whose rows join a leaderboard (the ablation table is written on its own only)
LEADERBOARD_TABLES: tuple[ReportedTable, ...] = (INSTRUCTX2X_V1_TABLE1, INSTRUCTX2X_V2_TABLE2, PROGEMU_TABLE1)


def tables_for_layout(layout: str, tables: tuple[ReportedTable, ...] = LEADERBOARD_TABLES) -> list[ReportedTable]:
    return [table for table in tables if table.layout == layout]
