"""Stage 6, evaluation: run folder -> evaluators -> metrics -> ``metrics.json``.

Owns: the evaluation of a run (:mod:`~cfbench.evaluation.evaluate`), the files it writes and their
readers (:mod:`~cfbench.evaluation.results`), scoring with bootstrap intervals
(:mod:`~cfbench.evaluation.scoring`), the metric vocabulary (names, directions, display names:
:mod:`~cfbench.evaluation.metric_names`), the evaluator output cache, the torchxrayvision and BiomedCLIP
evaluators and the weights catalogue.

May import: :mod:`cfbench.core`, :mod:`cfbench.datasets`, :mod:`cfbench.api`, :mod:`cfbench.phantom`,
:mod:`cfbench.runs`, :mod:`cfbench.metrics`.
"""
