"""Chapter 2's Dataset and DataLoader in torch: torchgpt's own windows (not npgpt.data's), so a
comparison of the two pipelines means something."""

from __future__ import annotations

import tiktoken
import torch
from torch.utils.data import DataLoader, Dataset

from npgpt.errors import NpgptError
from npgpt.tokenizer import get_tokenizer


class GPTDatasetV1(Dataset):
    """``input_ids[i]`` and ``target_ids[i]`` (shifted by one) for windows i*stride ... (the book's)."""

    def __init__(self, txt: str, tokenizer: tiktoken.Encoding, max_length: int, stride: int) -> None:
        if max_length < 1 or stride < 1:
            raise NpgptError(f"max_length ({max_length}) and stride ({stride}) must be positive")
        self.tokenizer = tokenizer
        token_ids = tokenizer.encode(txt, allowed_special={"<|endoftext|>"})
        inputs, targets = [], []
        for i in range(0, len(token_ids) - max_length, stride):
            inputs.append(torch.tensor(token_ids[i : i + max_length]))
            targets.append(torch.tensor(token_ids[i + 1 : i + max_length + 1]))
        # stacked: (N, T) int64 each; empty (0, T) when the text is shorter than one window
        self.input_ids = torch.stack(inputs) if inputs else torch.empty(0, max_length, dtype=torch.long)
        self.target_ids = torch.stack(targets) if targets else torch.empty(0, max_length, dtype=torch.long)

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
