"""torchgpt: the book's GPT-2 in PyTorch (chapters 4-5, appendix D), with opt-in fast paths.

It borrows from npgpt only what holds no model math: the config, tokenizer, text split,
schedule formula, errors and safe file writing (the list is a contract in pyproject.toml).
"""

from torchgpt.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from torchgpt.data import GPTDatasetV1, create_dataloader_v1
from torchgpt.device import pick_device
from torchgpt.fast import compile_model, enable_tf32, make_adamw
from torchgpt.generation import generate, generate_text_simple
from torchgpt.model import (
    GELU,
    FeedForward,
    GPTModel,
    KVCache,
    LayerNorm,
    MultiHeadAttention,
    TransformerBlock,
    set_attention,
)
from torchgpt.train import (
    calc_loss_batch,
    calc_loss_loader,
    evaluate_model,
    generate_and_print_sample,
    text_to_token_ids,
    token_ids_to_text,
    train_model,
    train_model_simple,
)

__all__ = [
    "GELU",
    "FeedForward",
    "GPTDatasetV1",
    "GPTModel",
    "KVCache",
    "LayerNorm",
    "MultiHeadAttention",
    "TransformerBlock",
    "calc_loss_batch",
    "calc_loss_loader",
    "compile_model",
    "create_dataloader_v1",
    "enable_tf32",
    "evaluate_model",
    "generate",
    "generate_and_print_sample",
    "generate_text_simple",
    "load_checkpoint",
    "load_model_state",
    "make_adamw",
    "pick_device",
    "save_checkpoint",
    "set_attention",
    "text_to_token_ids",
    "token_ids_to_text",
    "train_model",
    "train_model_simple",
]
