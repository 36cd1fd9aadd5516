"""Stage 7, leaderboards: evaluated run folders -> tables, plots and a gallery a paper can use.

Owns: the table model (:mod:`~cfbench.leaderboard.table_model`), Markdown / CSV / LaTeX formats, plots,
the HTML gallery, the papers' reported values, writing a leaderboard folder, and the demo (the whole
pipeline on the phantom demo split, ending in a leaderboard).

May import: every stage below (core, datasets, api, phantom, runs, evaluation).
"""
