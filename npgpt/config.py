"""Model configuration: the book's ``GPT_CONFIG_124M`` dict and a frozen dataclass with the same keys."""

from __future__ import annotations

import dataclasses
from typing import Any

from npgpt.errors import NpgptError

# Chapter 4's configuration: GPT-2 small. A plain dict, exactly as the book passes it to GPTModel.
# (Chapter 5 trains it with context_length shortened to 256; `npgpt train` does the same.)
GPT_CONFIG_124M: dict[str, Any] = {
    "vocab_size": 50257,  # vocabulary of the GPT-2 BPE tokenizer
    "context_length": 1024,
    "emb_dim": 768,
    "n_heads": 12,
    "n_layers": 12,
    "drop_rate": 0.1,
    "qkv_bias": False,
}

# OpenAI's four sizes as the book's chapter 5 lists them; loading OpenAI weights also sets
# context_length=1024 and qkv_bias=True.
_SIZES: dict[str, dict[str, int]] = {
    "gpt2-small (124M)": {"emb_dim": 768, "n_layers": 12, "n_heads": 12},
    "gpt2-medium (355M)": {"emb_dim": 1024, "n_layers": 24, "n_heads": 16},
    "gpt2-large (774M)": {"emb_dim": 1280, "n_layers": 36, "n_heads": 20},
    "gpt2-xl (1558M)": {"emb_dim": 1600, "n_layers": 48, "n_heads": 25},
}
# A model small enough for demos and tests, trains in seconds. Its vocabulary is GPT-2's tokenizer
# cut to its first 255 merges (npgpt.tokenizer.get_tokenizer(512)): at 50,257 the two vocabulary
# tables would be 98% of its parameters and most of its time.
_TINY = {"emb_dim": 64, "n_layers": 2, "n_heads": 4, "context_length": 64, "vocab_size": 512}
_ALIASES = {
    "gpt2-small": "gpt2-small (124M)",
    "124M": "gpt2-small (124M)",
    "gpt2-medium": "gpt2-medium (355M)",
    "355M": "gpt2-medium (355M)",
    "gpt2-large": "gpt2-large (774M)",
    "774M": "gpt2-large (774M)",
    "gpt2-xl": "gpt2-xl (1558M)",
    "1558M": "gpt2-xl (1558M)",
}


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """The book's config dict as a frozen dataclass; field names are the dict's keys.

    Defaults are ``GPT_CONFIG_124M``. Validated on construction so that a bad config fails
    here, with a one-line message, and not deep inside a reshape.
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NpgptError(f"config {name}={value!r} must be a positive integer")
        if self.emb_dim % self.n_heads != 0:
            raise NpgptError(
                f"emb_dim={self.emb_dim} is not divisible by n_heads={self.n_heads}; "
                "choose emb_dim = n_heads * head_dim"
            )
        if not 0.0 <= float(self.drop_rate) < 1.0:
            raise NpgptError(f"drop_rate={self.drop_rate!r} must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> GPTConfig:
        """Build from the book's dict; an unknown key is an error, missing keys take defaults."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - fields)
        if unknown:
            raise NpgptError(f"unknown config key(s) {unknown}; valid keys are {sorted(fields)}")
        return cls(**cfg)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """One of the book's GPT-2 sizes ("gpt2-small (124M)", ... "gpt2-xl (1558M)"), or "tiny".

        Short names ("gpt2-small", "124M") are accepted too. Other fields keep
        ``GPT_CONFIG_124M``'s values unless overridden.
        """
        if name == "tiny":
            return cls.from_dict({**GPT_CONFIG_124M, **_TINY, **overrides})
        key = _ALIASES.get(name, name)
        if key not in _SIZES:
            valid = [*sorted(_SIZES), "tiny", *sorted(_ALIASES)]
            raise NpgptError(f"unknown preset {name!r}; choose one of {valid}")
        return cls.from_dict({**GPT_CONFIG_124M, **_SIZES[key], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The book's plain dict, e.g. for ``torchgpt.GPTModel(cfg.to_dict())``."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> GPTConfig:
        return dataclasses.replace(self, **changes)


def as_config(cfg: GPTConfig | dict[str, Any]) -> GPTConfig:
    """Accept either the book's dict or a GPTConfig."""
    return cfg if isinstance(cfg, GPTConfig) else GPTConfig.from_dict(cfg)
