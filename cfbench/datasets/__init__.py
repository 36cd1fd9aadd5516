"""Stage 1, data: the MIMIC-EDIT-INSTRUCTION layout every split is read from, and the builders that write it.

Owns: the dataset reader and writer (:mod:`~cfbench.datasets.edit_dataset`), the dataset card, the
builders (Diff-VQA parsing, MIMIC tables and build, NIH ChestX-ray14, ICG-CXR), the shared pair engine
(read, resize, register, write; parallel and resumable), rigid registration, and pseudo masks.

May import: :mod:`cfbench.core`.
"""
