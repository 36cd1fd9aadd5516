"""Stage 2, contracts: what a generator and an evaluator must do, and how generators are found.

Owns: the model contract (:mod:`~cfbench.api.model`: ``EditRequest`` -> ``EditResult``), the registry
(built-ins, entry points, ``module:Class``), model options, the prompt of text-conditioned generators,
and the evaluator contract (:mod:`~cfbench.api.evaluator`).

May import: :mod:`cfbench.core`, :mod:`cfbench.datasets`.
"""
