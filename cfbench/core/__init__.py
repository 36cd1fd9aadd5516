"""Shared helpers every stage may use: settings, image I/O, atomic storage, hashing, seeds, provenance,
and the finding vocabulary with the instruction grammar.

Owns: :mod:`~cfbench.core.config` (settings and their sources), :mod:`~cfbench.core.images` (every image
enters and leaves through here), :mod:`~cfbench.core.storage` (atomic writes, JSON-lines ledgers),
:mod:`~cfbench.core.hashing`, :mod:`~cfbench.core.seeds`, :mod:`~cfbench.core.provenance`,
:mod:`~cfbench.core.prefetch`, :mod:`~cfbench.core.findings`.

May import: nothing else of cfbench (this is the bottom of the stack).
"""
