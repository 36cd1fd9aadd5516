"""Stage 7.5, suites: jobs that orchestrate several stages end to end (generate, evaluate, analyse, write),
above the leaderboard. Owns the metric-validity suite (``cfbench validate``, :mod:`~cfbench.suites.validity`).

May import: every stage below it (core, metrics, datasets, api, phantom, models, runs, evaluation, leaderboard).
"""
