"""Training: a tiny model overfits; resume is bit-for-bit; checkpoints are atomic and validated."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from npgpt import AdamW, GPTConfig, GPTModel, NpgptError, create_dataloader_v1, get_tokenizer, train_model
from npgpt.checkpoint import load_checkpoint, save_checkpoint
from npgpt.train import load_training, train_model_simple

TEXT = (
    "The lighthouse keeper climbed the stairs every evening at the same hour, trimmed the wick, "
    "polished the glass and wound the clockwork that turned the lens. "
) * 6
CFG = GPTConfig(vocab_size=512, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1)
TOKENIZER = get_tokenizer(CFG.vocab_size)  # GPT-2's first merges: the vocabulary is not under test here


def loaders(cfg=CFG, batch_size=2):
    tok = TOKENIZER
    T = cfg.context_length
    train = create_dataloader_v1(TEXT, batch_size, T, T, shuffle=True, drop_last=True, tokenizer=tok)
    val = create_dataloader_v1(TEXT[:400], batch_size, T, T, shuffle=False, drop_last=False, tokenizer=tok)
    return train, val


def run(epochs, path=None, state=None, model=None, optimizer=None, **kw):
    train, val = loaders()
    model = model or GPTModel(CFG, seed=3)
    optimizer = optimizer or AdamW(model.params, lr=3e-3, weight_decay=0.1)
    state = train_model(
        model, train, val, optimizer, epochs, 4, 2, "The lighthouse", TOKENIZER, 3, 1e-4, 1e-4,
        checkpoint_path=path, state=state, log=lambda s: None, sample_tokens=3, **kw,
    )  # fmt: skip
    return model, optimizer, state


def test_tiny_model_overfits_a_short_text():
    train, val = loaders()
    model = GPTModel(CFG.replace(drop_rate=0.0), seed=0)
    optimizer = AdamW(model.params, lr=5e-3, weight_decay=0.0)
    train_losses, _, tokens = train_model_simple(model, train, val, optimizer, 25, 5, 3, "The", TOKENIZER)
    assert train_losses[0] > 5.5  # ~ln(512) at the start
    assert train_losses[-1] < 0.5  # memorised
    assert tokens[-1] > tokens[0]


@pytest.mark.parametrize("stop_after", [3, 5, 7])  # mid-epoch, at the end of epoch 1, in epoch 2
def test_resume_is_bit_for_bit(tmp_path, stop_after):
    full_model, full_opt, full = run(3)

    ckpt = tmp_path / "ckpt.npz"
    run(3, path=ckpt, max_steps=stop_after)  # "interrupted"
    model, optimizer, state, _ = load_training(ckpt)
    assert state.global_step == stop_after - 1
    model, optimizer, resumed = run(3, path=ckpt, state=state, model=model, optimizer=optimizer)

    assert dataclasses.asdict(resumed) | {"rng_state": None} == dataclasses.asdict(full) | {"rng_state": None}
    for k, v in full_model.params.items():
        np.testing.assert_array_equal(model.params[k], v, err_msg=k)
        np.testing.assert_array_equal(optimizer.m[k], full_opt.m[k], err_msg=k)
        np.testing.assert_array_equal(optimizer.v[k], full_opt.v[k], err_msg=k)
    assert optimizer.t == full_opt.t


def test_resume_without_the_rng_state_diverges(tmp_path):
    """Negative control for the test above: dropping the saved RNG state must change the run."""
    full_model, _, _ = run(2)
    ckpt = tmp_path / "ckpt.npz"
    run(2, path=ckpt, max_steps=3)
    model, optimizer, state, _ = load_training(ckpt)
    state.rng_state = None
    model, _, _ = run(2, state=state, model=model, optimizer=optimizer)
    assert not np.array_equal(model.params["out_head.weight"], full_model.params["out_head.weight"])


def test_nan_loss_is_a_clear_error(tmp_path):
    train, val = loaders()
    model = GPTModel(CFG, seed=0)
    model.params["final_norm.scale"][...] = np.nan
    with pytest.raises(NpgptError, match="the training loss became nan at step 1; stopped without saving"):
        train_model(model, train, val, AdamW(model.params), 1, 1, 1, "The", get_tokenizer(), log=lambda s: None)


def test_checkpoint_roundtrip_and_errors(tmp_path):
    model = GPTModel(CFG, seed=1)
    path = tmp_path / "w.npz"
    save_checkpoint(path, CFG, model.params, meta={"note": "x"})
    cfg, params, opt, meta = load_checkpoint(path)
    assert cfg == CFG and opt is None and meta["note"] == "x"
    assert all(np.array_equal(params[k], v) for k, v in model.params.items())
    assert list(tmp_path.iterdir()) == [path]  # no temp files left behind

    with pytest.raises(NpgptError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(NpgptError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    flipped = bytearray(path.read_bytes())
    flipped[len(flipped) // 3] ^= 0xFF  # inside the tok_emb payload: caught by the zip CRC
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(NpgptError, match="corrupt or truncated"):
        load_checkpoint(corrupt)
    with pytest.raises(NpgptError, match="weights only"):
        load_training(path)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = GPTModel(CFG, seed=1)
    path = tmp_path / "w.npz"
    save_checkpoint(path, CFG, model.params)
    before = path.read_bytes()

    def savez_then_fail(f, **arrays):
        f.write(b"PK half an archive")
        raise OSError("No space left on device")

    monkeypatch.setattr("npgpt.checkpoint.np.savez", savez_then_fail)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, CFG, model.params)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_checkpoint_from_another_config_names_the_tensors(tmp_path, monkeypatch):
    other = CFG.replace(emb_dim=16)
    path = tmp_path / "w.npz"
    monkeypatch.setattr("npgpt.checkpoint.check_params", lambda params, cfg: None)  # write a bad file
    save_checkpoint(path, CFG, GPTModel(other, seed=0).params)
    monkeypatch.undo()
    with pytest.raises(NpgptError, match=r"tok_emb\.weight"):
        load_checkpoint(path)
