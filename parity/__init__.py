"""parity: the same weights in npgpt and torchgpt, and proof that they agree.

This package sits at the top of the dependency graph (parity -> npgpt, torchgpt) and owns the
``npgpt`` console script.
"""

from parity.convert import to_numpy, to_torch
from parity.weights import load_weights, save_weights

__all__ = ["load_weights", "save_weights", "to_numpy", "to_torch"]
