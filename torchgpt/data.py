"""Chapter 2's Dataset and DataLoader in torch, over the same windows as npgpt.data."""

from __future__ import annotations

import tiktoken
import torch
from torch.utils.data import DataLoader, Dataset

from npgpt import data as np_data
from npgpt.tokenizer import get_tokenizer


class GPTDatasetV1(Dataset):
    """``input_ids[i]`` and ``target_ids[i]`` (shifted by one) for windows i*stride ... (the book's)."""

    def __init__(self, txt: str, tokenizer: tiktoken.Encoding, max_length: int, stride: int) -> None:
        windows = np_data.GPTDatasetV1(txt, tokenizer, max_length, stride)
        self.tokenizer = tokenizer
        self.input_ids = torch.from_numpy(windows.input_ids)  # (N, T) int64
        self.target_ids = torch.from_numpy(windows.target_ids)  # (N, T) int64

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_ids[idx], self.target_ids[idx]


def create_dataloader_v1(
    txt: str,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    pin_memory: bool = False,
    sampler: torch.utils.data.Sampler | None = None,
) -> DataLoader:
    """The book's loader; shuffling follows torch's global RNG (``torch.manual_seed``) like the book.

    ``pin_memory`` (opt-in) speeds host-to-GPU copies; ``sampler`` is for DistributedSampler.
    """
    dataset = GPTDatasetV1(txt, get_tokenizer(), max_length, stride)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
