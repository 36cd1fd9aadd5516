"""Stage 8, training generators: InstructX2X fine-tuning, its starting weights, edit augmentation,
conversion of original LDM checkpoints to diffusers folders, and of CXR-IRGen's Lightning checkpoints to the
folder its adapter loads (:mod:`~cfbench.training.cxr_irgen_convert`).

May import: :mod:`cfbench.core`, :mod:`cfbench.datasets`, :mod:`cfbench.api`, :mod:`cfbench.phantom`,
:mod:`cfbench.diffusion`, :mod:`cfbench.models` (an adapter's folder layout).
"""
