"""Chapter 2's data pipeline without torch: sliding windows over token ids and a seeded loader.

Shapes: N windows, T = max_length, B batch_size.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

import numpy as np
import tiktoken

from npgpt.errors import NpgptError
from npgpt.tokenizer import ENDOFTEXT, get_tokenizer


def embedded_text() -> str:
    """A short original story shipped with the package: the default training text."""
    return (resources.files("npgpt") / "data" / "sample.txt").read_text(encoding="utf-8")


class GPTDatasetV1:
    """Input/target windows: ``input = ids[i : i + T]``, ``target = ids[i + 1 : i + T + 1]`` for
    ``i = 0, stride, 2 * stride, ...`` while ``i < len(ids) - T`` (the book's range)."""

    def __init__(self, txt: str, tokenizer: tiktoken.Encoding, max_length: int, stride: int) -> None:
        if max_length < 1 or stride < 1:
            raise NpgptError(f"max_length ({max_length}) and stride ({stride}) must be positive")
        self.tokenizer = tokenizer
        token_ids = np.array(tokenizer.encode(txt, allowed_special={ENDOFTEXT}), dtype=np.int64)
        starts = np.arange(0, len(token_ids) - max_length, stride)  # (N,)
        offsets = np.arange(max_length)  # (T,)
        self.input_ids = token_ids[starts[:, None] + offsets]  # (N, T)
        self.target_ids = token_ids[starts[:, None] + offsets + 1]  # (N, T)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        return self.input_ids[idx], self.target_ids[idx]


class DataLoader:
    """Batches of a GPTDatasetV1, like torch's DataLoader with ``shuffle`` and ``drop_last``.

    The order of epoch e is a permutation drawn from ``default_rng([seed, e])``, so any epoch
    can be replayed exactly (resuming a run mid-epoch needs nothing but the epoch number).
    Iterating the loader directly walks epochs 0, 1, 2, ... like a torch loader's generator.
    """

    def __init__(self, dataset: GPTDatasetV1, batch_size: int, shuffle: bool, drop_last: bool, seed: int = 123) -> None:
        if batch_size < 1:
            raise NpgptError(f"batch_size={batch_size} must be positive")
        self.dataset, self.batch_size, self.shuffle, self.drop_last, self.seed = (
            dataset,
            batch_size,
            shuffle,
            drop_last,
            seed,
        )
        self._epoch = 0

    def __len__(self) -> int:
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The (B, T) input and target batches of one epoch."""
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        for k in range(len(self)):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            yield self.dataset.input_ids[idx], self.dataset.target_ids[idx]  # (B, T) each

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch, self._epoch = self._epoch, self._epoch + 1
        return self.batches(epoch)


def create_dataloader_v1(
    txt: str,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int = 123,
    tokenizer: tiktoken.Encoding | None = None,
) -> DataLoader:
    """The book's loader factory with its defaults. ``num_workers`` is accepted for the book's
    signature and ignored (batches are slices of one array)."""
    dataset = GPTDatasetV1(txt, tokenizer or get_tokenizer(), max_length, stride)
    return DataLoader(dataset, batch_size, shuffle, drop_last, seed)


def train_val_split(text: str, train_ratio: float = 0.90) -> tuple[str, str]:
    """Chapter 5's split: the first 90% of the CHARACTERS train, the rest validate."""
    split_idx = int(train_ratio * len(text))
    return text[:split_idx], text[split_idx:]
