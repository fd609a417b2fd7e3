"""``GPTModel``: the book's model object, backed by the NumPy forward/backward in npgpt.layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from npgpt import workspace
from npgpt.config import GPTConfig, as_config
from npgpt.errors import NpgptError
from npgpt.layers import cross_entropy, gpt_model, transformer_block
from npgpt.layers.kv_cache import KVCache
from npgpt.params import check_ids, check_params, init_params, num_params


class GPTModel:
    """GPT-2 in NumPy with the book's interface.

    >>> model = GPTModel(GPT_CONFIG_124M, seed=123)   # doctest: +SKIP
    >>> logits = model(ids)                           # (B, T) -> (B, T, V)
    >>> loss, grads = model.loss_and_grads(ids, targets)

    ``params`` is a flat dict keyed like the book's ``state_dict()``. Dropout is active after
    ``train()`` and draws masks from ``self.rng`` unless ``masks`` are given; ``eval()`` turns
    it off. A new model starts in train mode, like an nn.Module. ``reuse_grad_buffers=True`` writes
    each call's weight gradients into the previous call's arrays (a training loop's choice: the
    gradients returned are valid until the next call). ``attention="blocked"`` runs
    the block-skipping attention (same function and gradients, less memory and work at long
    contexts; npgpt/layers/blocked_attention.py), ``attention_block`` rows per block (default
    blocked_attention.BLOCK); the default is the book's.
    """

    def __init__(
        self,
        cfg: GPTConfig | dict[str, Any],
        seed: int = 0,
        dtype: np.dtype | type = np.float32,
        params: dict[str, np.ndarray] | None = None,
        attention: str = "plain",
        reuse_grad_buffers: bool = False,
        attention_block: int | None = None,
    ) -> None:
        if attention not in transformer_block.ATTENTIONS:
            raise NpgptError(f"attention={attention!r}: choose one of {', '.join(transformer_block.ATTENTIONS)}")
        self.attention, self.attention_block = attention, attention_block
        self.cfg = as_config(cfg)
        self.params = init_params(self.cfg, seed, dtype) if params is None else params
        self.dtype = check_params(self.params, self.cfg)
        self.rng = np.random.default_rng(seed)  # dropout masks
        self.training = True
        # the dropout masks of the last forward, by site, to replay (masks=...); the blocked attention's
        # own draws are dropout.PackedMask (np.asarray gives the booleans)
        self.last_masks: dict[str, np.ndarray] = {}
        # reuse_grad_buffers: each call writes its weight gradients into the last call's arrays
        # (npgpt/workspace.py): no fresh gigabyte a step, but a call's grads last until the next call
        self.workspace = workspace.Workspace() if reuse_grad_buffers else None

    def train(self, mode: bool = True) -> GPTModel:
        self.training = mode
        return self

    def eval(self) -> GPTModel:
        return self.train(False)

    def num_params(self) -> int:
        return num_params(self.cfg)

    def forward(
        self,
        ids: np.ndarray,
        masks: dict[str, np.ndarray] | None = None,
        kv_cache: KVCache | None = None,
        taps: list[dict[str, np.ndarray]] | None = None,
    ) -> tuple[np.ndarray, gpt_model.Cache]:
        """ids (B, T) -> (logits (B, T, V), cache for backward). ``taps``: see gpt_model.forward."""
        ids = check_ids(ids, self.cfg, 0 if kv_cache is None else kv_cache.length)
        logits, cache = gpt_model.forward(
            self.params, self.cfg, ids, train=self.training, rng=self.rng, masks=masks, kv_cache=kv_cache, taps=taps,
            attention=self.attention, block=self.attention_block,
        )  # fmt: skip
        self.last_masks = cache.masks
        return logits, cache

    def __call__(
        self, ids: np.ndarray, masks: dict[str, np.ndarray] | None = None, kv_cache: KVCache | None = None
    ) -> np.ndarray:
        return self.forward(ids, masks, kv_cache)[0]

    def loss(self, ids: np.ndarray, targets: np.ndarray, masks: dict[str, np.ndarray] | None = None) -> float:
        """Mean cross-entropy over B*T, without keeping anything for backward. With
        ``reuse_grad_buffers`` the forward writes into the workspace's activation arrays (only a
        float comes back, and the last call's gradients are other arrays: they stay valid)."""
        with workspace.active(self.workspace):
            logits, _ = self.forward(ids, masks)
            loss, _ = cross_entropy.forward(logits, self._check_targets(targets, ids), out=logits)  # in place
        return float(loss)

    def loss_and_grads(
        self, ids: np.ndarray, targets: np.ndarray, masks: dict[str, np.ndarray] | None = None
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Forward, cross-entropy and the hand-written backward; grads are keyed like ``params``."""
        with workspace.active(self.workspace):  # arrays of this call only: outputs, loss, gradients
            logits, cache = self.forward(ids, masks)
            # one (B, T, V) array all through: the probabilities overwrite the logits, then dlogits the
            # probabilities (each is dead once the next is made; at T=1024 each is 0.4 GB in float32)
            loss, ce_cache = cross_entropy.forward(logits, self._check_targets(targets, ids), out=logits)
            dlogits = cross_entropy.backward(1.0, ce_cache, out=ce_cache.probs)
            del logits, ce_cache
            grads = gpt_model.backward(dlogits, cache)
        return float(loss), grads

    def _check_targets(self, targets: np.ndarray, ids: np.ndarray) -> np.ndarray:
        targets = check_ids(targets, self.cfg)
        if targets.shape != np.shape(ids):
            raise NpgptError(f"targets shape {targets.shape} differs from ids shape {np.shape(ids)}")
        return targets
