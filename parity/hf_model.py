"""transformers' GPT2LMHeadModel as an implementation under check, with the parts of it that only
its own API reaches: greedy generation through its ``past_key_values`` cache, and the sampling
filters as its logits processors (``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
``TopPLogitsWarper``, in the order ``generate`` applies them)."""

from __future__ import annotations

from typing import Any

import numpy as np

from npgpt.config import GPTConfig
from parity.torch_module import TorchModuleImpl, hf_config


def hf_model(cfg: GPTConfig, attention: str = "eager") -> Any:
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel(hf_config(cfg, attention))


class HFModelImpl(TorchModuleImpl):
    """A module in Hugging Face's layout, checked with its generation and filters too."""

    def generate_greedy(self, prompt: np.ndarray, n: int, use_cache: bool = True, context_size: int | None = None):
        """Greedy continuation over the last ``context_size`` tokens: with the cache, the window
        once and then one token per call with the returned ``past_key_values``, the cache dropped
        and the cropped window fed again once it is full (the book's sliding window); without it,
        the cropped window every step."""
        torch = self.torch
        self.module.eval()
        context = context_size or self.cfg.context_length
        ids, past, seen = self._ids(prompt), None, []
        with torch.no_grad():
            for _ in range(n):
                full = past is None or past.get_seq_length() >= context
                past = None if full else past
                step_input = ids[:, -context:] if full or not use_cache else ids[:, -1:]
                out = self.module(input_ids=step_input, past_key_values=past, use_cache=use_cache)
                logits = out.logits[:, -1, :]
                seen.append(logits.cpu().numpy())
                ids = torch.cat([ids, logits.argmax(dim=-1, keepdim=True)], dim=1)
                past = out.past_key_values if use_cache else None
        return ids.cpu().numpy(), seen

    def filter_logits(self, logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None):
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        scores = self.torch.from_numpy(np.ascontiguousarray(logits))
        warpers = [TemperatureLogitsWarper(temperature)] if temperature > 0 else []
        warpers += [TopKLogitsWarper(top_k)] if top_k is not None else []
        warpers += [TopPLogitsWarper(top_p)] if top_p is not None and top_p < 1.0 else []
        for warp in warpers:
            scores = warp(None, scores)
        return scores.numpy()
