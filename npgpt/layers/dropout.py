"""Inverted dropout as torch does it: keep with probability 1 - p, scale kept values by 1/(1 - p).

The keep mask is a boolean array of x's shape. It is drawn from an explicit
``np.random.Generator`` or supplied by the caller, so two implementations can be run with
the same masks (parity with dropout on). Derivation: docs/math/dropout.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npgpt.errors import NpgptError


class Cache(NamedTuple):
    mask: np.ndarray | PackedMask | None  # boolean keep mask (or its bits), None when dropout was the identity
    scale: float  # 1 / (1 - p)


class PackedMask:
    """A keep mask held as bits (``np.packbits`` along the last axis): an eighth of the boolean
    mask's memory, for a layer that keeps a large mask from its forward to its backward and reads
    it in row blocks (blocked_attention: (B, H, T, T), 25 MB a layer at GPT-2 small's B=2, T=1024
    as booleans). ``np.asarray(packed)`` gives the boolean mask back."""

    def __init__(self, bits: np.ndarray, cols: int) -> None:
        self.bits = bits  # (..., ceil(cols / 8)) uint8
        self.shape = (*bits.shape[:-1], cols)

    @classmethod
    def of(cls, mask: np.ndarray) -> PackedMask:
        return cls(np.packbits(mask, axis=-1), mask.shape[-1])

    def rows(self, i0: int, i1: int, cols: int) -> np.ndarray:
        """``mask[..., i0:i1, :cols]`` as booleans."""
        return np.unpackbits(self.bits[..., i0:i1, : (cols + 7) // 8], axis=-1, count=cols).view(bool)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        mask = self.rows(0, self.shape[-2], self.shape[-1])
        return mask if dtype is None else mask.astype(dtype)


def rows(mask: np.ndarray | PackedMask, i0: int, i1: int, cols: int) -> np.ndarray:
    """``mask[..., i0:i1, :cols]`` of a boolean or a packed mask, as booleans."""
    return mask.rows(i0, i1, cols) if isinstance(mask, PackedMask) else mask[..., i0:i1, :cols]


def part(mask: np.ndarray | PackedMask, index: tuple[slice, ...]) -> np.ndarray | PackedMask:
    """``mask[index]`` over the leading axes (not the last), of a boolean or a packed mask."""
    return PackedMask(mask.bits[index], mask.shape[-1]) if isinstance(mask, PackedMask) else mask[index]


# uniforms drawn per pass: the same numbers as one draw of the whole shape (the bit generator
# carries its state from call to call; tests/npgpt/test_invariants.py holds the two equal) without
# a float32 array the mask's size (100 MB for the attention's at GPT-2 small's B=2, T=1024)
DRAW_CHUNK = 1 << 18


def draw_mask(rng: np.random.Generator, shape: tuple[int, ...], p: float) -> np.ndarray:
    """A boolean keep mask: True with probability 1 - p, i.e. ``rng.random(shape, float32) >= p``."""
    mask = np.empty(shape, dtype=bool)
    flat = mask.reshape(-1)  # a view: the mask is new and contiguous
    uniforms = np.empty(min(DRAW_CHUNK, flat.size), dtype=np.float32)
    for start in range(0, flat.size, DRAW_CHUNK):
        u = uniforms[: flat.size - start]
        rng.random(dtype=np.float32, out=u)
        np.greater_equal(u, p, out=flat[start : start + u.size])
    return mask


def forward(
    x: np.ndarray,
    p: float,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, Cache]:
    """Apply dropout when ``train`` and ``p > 0``; otherwise return ``x`` unchanged.

    A supplied ``mask`` wins over ``rng``. In training with ``p > 0`` one of them is required.
    """
    if not train or p == 0.0:
        return x, Cache(None, 1.0)
    mask = keep_mask(x.shape, p, rng=rng, mask=mask)
    scale = 1.0 / (1.0 - p)
    out = np.multiply(x, mask)  # out = x * mask * scale; the bool mask promotes to x's dtype
    out *= scale  # in place: one new array of x's shape, not two (scale is a Python float)
    return out, Cache(mask, scale)


def keep_mask(
    shape: tuple[int, ...], p: float, *, rng: np.random.Generator | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """The keep mask of a train-mode dropout of rate ``p`` over an array of ``shape``: the
    supplied ``mask`` (its shape checked: a wrong one would broadcast silently), else one drawn
    from ``rng``. For a layer that applies dropout piecewise (blocked_attention)."""
    if mask is not None:
        if mask.shape != tuple(shape):
            raise NpgptError(f"dropout mask has shape {mask.shape}, expected {tuple(shape)}")
        return mask
    if rng is None:
        raise NpgptError("dropout in train mode needs an rng or a mask; pass rng=np.random.default_rng(seed)")
    return draw_mask(rng, tuple(shape), p)


def at_site(masks: dict[str, np.ndarray | None], site: str, p: float) -> tuple[float, np.ndarray | None]:
    """(rate, mask) for one named dropout site: the site's mask from ``masks``, or rate 0 when
    ``masks`` maps the site to None (switched off: how a comparison with an implementation that
    cannot take a mask at that site keeps both sides equal)."""
    if site in masks and masks[site] is None:
        return 0.0, None
    return p, masks.get(site)


def backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """``out = x * mask * scale``  ->  ``dx = dout * mask * scale``."""
    mask, scale = cache
    if mask is None:
        return dout
    dx = np.multiply(dout, mask)  # dx = dout * mask * scale, one new array (as forward)
    dx *= scale
    return dx
