"""Offline tokenizer (the book's checks) and chapter 2's sliding-window data."""

from __future__ import annotations

import numpy as np
import pytest

from npgpt import NpgptError, create_dataloader_v1, get_tokenizer, text_to_token_ids, token_ids_to_text, train_val_split
from npgpt.tokenizer import read_text


def test_book_examples():
    tok = get_tokenizer()
    assert tok.encode("Hello, I am") == [15496, 11, 314, 716]
    assert tok.n_vocab == 50257 and tok.eot_token == 50256
    ids = text_to_token_ids("Every effort moves you", tok)
    assert ids.shape == (1, 4) and ids.dtype == np.int64
    assert token_ids_to_text(ids, tok) == "Every effort moves you"
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
    assert tok.decode(tok.encode(text, allowed_special={"<|endoftext|>"})) == text
    assert 50256 in tok.encode(text, allowed_special={"<|endoftext|>"})


@pytest.mark.parametrize("vocab_size", [257, 512, 4096, 50257, 50304])
def test_a_smaller_vocabulary_is_gpt2s_first_merges(vocab_size):
    full, tok = get_tokenizer(), get_tokenizer(vocab_size)
    text = "The lighthouse keeper's 112 steps: naïve café, 日本語 <|endoftext|> and tabs\t\n"
    ids = tok.encode(text, allowed_special={"<|endoftext|>"})
    assert tok.decode(ids) == text  # every text still spells out (the 256 byte tokens)
    eot = min(vocab_size, 50257) - 1
    assert tok.eot_token == eot and ids.count(eot) == 1 and max(ids) == eot
    assert tok.n_vocab == min(vocab_size, 50257)
    # each kept token is GPT-2's own id for the same bytes, and a kept token splits only into kept ones
    assert all(full.encode_single_token(tok.decode_single_token_bytes(i)) == i for i in set(ids) - {eot})
    if vocab_size < 50257:
        assert len(ids) > len(full.encode(text, allowed_special={"<|endoftext|>"}))  # fewer merges, more tokens


def test_the_tiny_config_has_a_small_vocabulary_its_tokenizer_fits():
    from npgpt import GPTConfig

    cfg = GPTConfig.preset("tiny")
    assert cfg.vocab_size == 512
    ids = get_tokenizer(cfg.vocab_size).encode("Every effort moves you, every day.")
    assert max(ids) < cfg.vocab_size


@pytest.mark.parametrize("bad", [256, 0, -3, 2.5, True])
def test_a_vocabulary_too_small_for_the_bytes_is_refused(bad):
    with pytest.raises(NpgptError, match="cannot hold GPT-2's 256 byte tokens"):
        get_tokenizer(bad)


def test_the_verdict(verdict_text):
    assert len(verdict_text) == 20479
    assert len(get_tokenizer().encode(verdict_text)) == 5145


def test_sliding_windows():
    text = " ".join(f"w{i}" for i in range(60))
    tok = get_tokenizer()
    ids = tok.encode(text)
    loader = create_dataloader_v1(text, batch_size=3, max_length=8, stride=4, shuffle=False, drop_last=False)
    starts = list(range(0, len(ids) - 8, 4))
    assert len(loader.dataset) == len(starts)
    inputs, targets = next(iter(loader))
    assert inputs.shape == (3, 8)
    np.testing.assert_array_equal(inputs[1], ids[4:12])
    np.testing.assert_array_equal(targets[1], ids[5:13])  # targets are inputs shifted by one


def test_shuffle_is_seeded_and_drop_last():
    text = " ".join(f"w{i}" for i in range(200))
    a = create_dataloader_v1(text, batch_size=4, max_length=8, stride=8, shuffle=True, drop_last=True, seed=1)
    b = create_dataloader_v1(text, batch_size=4, max_length=8, stride=8, shuffle=True, drop_last=True, seed=1)
    n = len(a.dataset)
    assert len(a) == n // 4 and n % 4 != 0
    first = [x for x, _ in a.batches(0)]
    assert all(np.array_equal(x, y) for x, (y, _) in zip(first, b.batches(0), strict=True))
    assert not all(np.array_equal(x, y) for x, (y, _) in zip(first, a.batches(1), strict=True))
    keep = create_dataloader_v1(text, batch_size=4, max_length=8, stride=8, shuffle=False, drop_last=False)
    assert len(keep) == -(-n // 4)
    assert sum(len(x) for x, _ in keep) == n


def test_book_split_of_the_verdict(verdict_text):
    train, val = train_val_split(verdict_text)
    assert len(train) == 18431 and train + val == verdict_text
    loader = create_dataloader_v1(train, batch_size=2, max_length=256, stride=256, shuffle=True, drop_last=True)
    assert len(loader) == 9  # the book's 9 training batches of 2 x 256
    val_loader = create_dataloader_v1(val, batch_size=2, max_length=256, stride=256, shuffle=False, drop_last=False)
    assert len(val_loader) == 1


def test_non_utf8_text(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(NpgptError, match="is not UTF-8"):
        read_text(path)
    with pytest.raises(NpgptError, match="does not exist"):
        read_text(tmp_path / "missing.txt")
