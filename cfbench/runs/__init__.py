"""Stage 5, generation: split -> ``model.edit`` -> run folder.

Owns: the generation loop (:mod:`~cfbench.runs.generate`), the run folder with its crash-safe ledgers and
shards (:mod:`~cfbench.runs.store`), the typed run manifest and the file names of a run folder
(:mod:`~cfbench.runs.manifest`), and launcher detection for one process per GPU
(:mod:`~cfbench.runs.launcher`).

May import: :mod:`cfbench.core`, :mod:`cfbench.datasets`, :mod:`cfbench.api`, :mod:`cfbench.phantom`.
"""
