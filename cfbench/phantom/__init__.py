"""Stage 3, the phantom suite: CXR-like images with exact counterfactuals, so everything runs offline.

Owns: scenario sampling (:mod:`~cfbench.phantom.scenario`: patients, findings, poses, pairs), pixel
rendering (:mod:`~cfbench.phantom.render`), phantom datasets in the common layout
(:mod:`~cfbench.phantom.dataset`), the shipped phantom evaluator (:mod:`~cfbench.phantom.evaluator`) and
its training (:mod:`~cfbench.phantom.evaluator_training`).

May import: :mod:`cfbench.core`, :mod:`cfbench.datasets`, :mod:`cfbench.api`.
"""
