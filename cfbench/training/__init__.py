"""Stage 8, training generators: InstructX2X fine-tuning, its starting weights, edit augmentation, and
conversion of original LDM checkpoints to diffusers folders.

May import: :mod:`cfbench.core`, :mod:`cfbench.datasets`, :mod:`cfbench.api`, :mod:`cfbench.phantom`,
:mod:`cfbench.diffusion`.
"""
