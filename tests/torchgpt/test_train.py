"""torchgpt's chapter 5 / appendix D training, checkpoints and gradient accumulation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from npgpt import GPTConfig, NpgptError, get_tokenizer  # noqa: E402
from torchgpt import (  # noqa: E402
    GPTModel,
    create_dataloader_v1,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
    train_model,
    train_model_simple,
)
from torchgpt.train import calc_loss_batch  # noqa: E402

TEXT = "The keeper climbed the stairs, trimmed the wick and wound the clock that turned the lens. " * 8
CFG = GPTConfig(vocab_size=50257, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


def loaders(batch_size=2):
    torch.manual_seed(0)
    train = create_dataloader_v1(TEXT, batch_size, 16, 16, shuffle=True, drop_last=True)
    val = create_dataloader_v1(TEXT[:300], batch_size, 16, 16, shuffle=False, drop_last=False)
    return train, val


def test_train_model_simple_learns(capsys):
    torch.manual_seed(0)
    model = GPTModel(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    train_losses, val_losses, tokens = train_model_simple(
        model, *loaders(), opt, "cpu", 12, 5, 2, "The", get_tokenizer()
    )
    assert train_losses[0] > 9.0 and train_losses[-1] < 2.0
    assert len(val_losses) == len(train_losses) == len(tokens)
    assert "Ep 1 (Step 000000): Train loss" in capsys.readouterr().out


def test_train_model_schedule_and_clipping(monkeypatch):
    clipped_at = []
    real_clip = torch.nn.utils.clip_grad_norm_
    step = {"n": -1}

    def spy(params, max_norm, *a, **k):
        clipped_at.append(step["n"])
        return real_clip(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    torch.manual_seed(0)
    model = GPTModel(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
    real_step = opt.step

    def counting_step(*a, **k):
        step["n"] += 1
        return real_step(*a, **k)

    opt.step = counting_step
    train, val = loaders()
    *_, lrs = train_model(model, train, val, opt, "cpu", 2, 100, 1, "The", get_tokenizer(), 3, 1e-5, 1e-5, log=None)
    total = 2 * len(train)
    assert len(lrs) == total
    assert lrs[0] == pytest.approx(1e-5) and lrs[3] == pytest.approx(5e-4)  # peak reached after 3 warmup steps
    assert lrs[-1] > 1e-5 and min(lrs[3:]) >= 1e-5
    # the printed listing clips from step 4 (global_step > warmup_steps); the fix clips from step 3
    assert clipped_at[0] == 2  # counted before this step's optimizer.step: step index 3
    assert len(clipped_at) == total - 3


def test_gradient_accumulation_equals_the_full_batch():
    results = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        torch.manual_seed(0)
        model = GPTModel(CFG).double()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        train = create_dataloader_v1(TEXT, batch_size, 16, 16, shuffle=False, drop_last=True)
        train_model(
            model, train, train, opt, "cpu", 1, 1000, 1, "x", get_tokenizer(), 0,
            schedule="constant", grad_clip=None, accumulation_steps=accumulation, max_steps=2, log=None,
        )  # fmt: skip
        results.append(model.state_dict())
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-10, atol=1e-12, msg=k)


def test_nan_loss_is_a_clear_error():
    torch.manual_seed(0)
    model = GPTModel(CFG)
    with torch.no_grad():
        model.final_norm.scale.fill_(float("nan"))
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(NpgptError, match="loss became nan at step 0"):
        train_model(model, *loaders(), opt, "cpu", 1, 1, 1, "x", get_tokenizer(), 0, log=None)


def test_bf16_autocast_training_step_runs():
    torch.manual_seed(0)
    model = GPTModel(CFG)
    x, y = next(iter(loaders()[0]))
    loss32 = calc_loss_batch(x, y, model, "cpu")
    loss16 = calc_loss_batch(x, y, model, "cpu", amp_dtype=torch.bfloat16)
    assert loss16.dtype == torch.float32 and abs(loss16.item() - loss32.item()) < 5e-2
    loss16.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_checkpoint_roundtrip_and_errors(tmp_path):
    torch.manual_seed(0)
    model = GPTModel(CFG)
    opt = torch.optim.AdamW(model.parameters())
    path = tmp_path / "model_and_optimizer.pth"
    save_checkpoint(path, model, opt, note="x")
    state = load_checkpoint(path)
    fresh = GPTModel(CFG)
    load_model_state(fresh, state["model_state_dict"])
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True))
    torch.optim.AdamW(fresh.parameters()).load_state_dict(state["optimizer_state_dict"])
    assert state["note"] == "x"

    other = GPTModel(CFG.replace(emb_dim=16))
    with pytest.raises(NpgptError, match=r"misshaped \['tok_emb\.weight"):
        load_model_state(other, state["model_state_dict"])
    with pytest.raises(NpgptError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(NpgptError, match="corrupt"):
        load_checkpoint(bad)
