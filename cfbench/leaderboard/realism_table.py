"""The "realism and diversity" table of a leaderboard (cfbench, beyond the papers; CheXGenBench's families on
cfbench's evaluator features): KID, improved precision / recall, density / coverage, seed diversity and
memorisation. Written only when some run has one of its values; no column enters CMIG or any default score.

``realism.{md,csv,tex}`` beside the protocol tables (written by :mod:`cfbench.leaderboard.write`), built by the
same table model and formats.
"""

from __future__ import annotations

from cfbench.leaderboard.table_model import Column, Layout, RunSummary, build_leaderboard

REALISM_LAYOUT = Layout(
    name="realism",
    title="Realism and diversity: KID, precision/recall, density/coverage, seed spread, memorisation "
          "(cfbench, beyond the papers)",
    columns=(
        Column("kid", "kid", 1.0, 4, group="Realism (evaluator features)"),
        Column("precision", "manifold_precision", 1.0, 3, group="Realism (evaluator features)"),
        Column("recall", "manifold_recall", 1.0, 3, group="Realism (evaluator features)"),
        Column("density", "density", 1.0, 3, group="Realism (evaluator features)"),
        Column("coverage", "coverage", 1.0, 3, group="Realism (evaluator features)"),
        Column("seed_ms_ssim", "seed_ms_ssim", 1.0, 3, group="Seed diversity"),
        Column("seed_mae", "seed_mae", 1.0, 4, group="Seed diversity"),
        Column("closer_train", "closer_to_train_features", 1.0, 3, group="Memorisation", title_override="Closer to train"),
        Column("nn_ratio", "nn_ratio_features", 1.0, 3, group="Memorisation", title_override="NN ratio"),
    ),
    notes=("KID: unbiased MMD^2 (cubic kernel) over all samples, the anchors' subset mean and std in metrics.json "
           "components; precision/recall with k = 3 (Kynkaanniemi 2019), density/coverage with k = 5 (Naeem 2020), "
           "on the evaluator's features of real target vs generated images (the features FID reads); intervals from "
           "FID's bootstrap replicates.",
           "Seed MS-SSIM / spread (runs with --seeds 2): two run seeds' outputs per input (1 / 0 = no spread, as the unique true "
           "counterfactual); descriptive, not ranked.",
           "Memorisation (runs evaluated with --memorisation): closer to train: fraction of outputs closer to a training-split image than to their own input; NN ratio: "
           "the output's distance to its nearest training image over its input's (near 0: a training image "
           "returned). Feature space; the pixel-space values are in metrics.json. Neither is ranked: a right edit "
           "also moves away from its input (on the phantom demo the true counterfactual is closer to a training "
           "phantom than to its input for 81 % of samples in features, 12 % in pixels, at NN ratio 1.13 / 1.04); "
           "read them against the true counterfactual's row."),
    optional=True,
)


def realism_board(runs: list[RunSummary]):
    """The table (a :class:`~cfbench.leaderboard.table_model.Leaderboard`), or None when no run has a value."""
    board = build_leaderboard(runs, REALISM_LAYOUT, reported=[])
    if not any(cell.value is not None for row in board.measured_rows() for cell in row.cells.values()):
        return None
    return board

