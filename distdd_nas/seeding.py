"""Deterministic seed derivation: one root seed per study, named child streams everywhere else.

Nothing in distdd-nas seeds from the clock. A stage asks for ``derive_seed(root, "distill", it)``
and gets the same 63-bit integer on every machine, independent of call order, so adding a random
draw in one stage never shifts the random numbers of another.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(root: int, *names: object) -> int:
    """Return a 63-bit seed derived from ``root`` and a path of names (order matters)."""
    text = "/".join([str(int(root)), *(str(n) for n in names)])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def numpy_rng(root: int, *names: object) -> np.random.Generator:
    """A NumPy generator for the named stream."""
    return np.random.default_rng(derive_seed(root, *names))


def torch_generator(root: int, *names: object) -> torch.Generator:
    """A CPU torch generator for the named stream."""
    gen = torch.Generator()
    gen.manual_seed(derive_seed(root, *names))
    return gen
