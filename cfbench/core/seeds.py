"""The one seed derivation of cfbench: every random stream (a sample's generation noise, a phantom pair, a
training sample's augmentation and noise) is seeded by :func:`derive_seed` of the words that identify it,
so results depend on those words only, never on batch size, order, sharding or resumption.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(*words: int | str) -> int:
    """A seed in [0, 2**32) from non-negative integers and strings (e.g. ``(run_seed, sample_id)``).

    The words feed NumPy's ``SeedSequence`` (strings as the integer of their SHA-256), whose output
    streams are statistically independent for different word tuples. For integers only, this is
    ``SeedSequence(list(words)).generate_state(1)[0]``.
    """
    entropy = []
    for word in words:
        if isinstance(word, str):
            entropy.append(int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest(), "little"))
        elif isinstance(word, (int, np.integer)) and word >= 0:
            entropy.append(int(word))
        else:
            raise ValueError(f"seed words must be non-negative integers or strings, got {word!r}")
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
