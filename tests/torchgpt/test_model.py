"""torchgpt's model: the shared vocabulary, bad input, KV cache, SDPA and the other opt-in paths
checked against the book path in float32."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from npgpt import GPTConfig, NpgptError, param_shapes  # noqa: E402
from torchgpt import GPTModel, KVCache, generate, generate_text_simple, set_attention  # noqa: E402
from torchgpt.generation import filter_logits  # noqa: E402

CFG = GPTConfig(vocab_size=97, context_length=16, emb_dim=24, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True)


def make(cfg=CFG, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = GPTModel(cfg).to(dtype)
    with torch.no_grad():  # randomise everything, LayerNorm scale/shift included
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def test_state_dict_is_the_project_vocabulary():
    cfg = GPTConfig.preset("tiny")
    sd = GPTModel(cfg).state_dict()
    masks = {k for k in sd if k.endswith(".att.mask")}
    assert len(masks) == cfg.n_layers
    assert {k: tuple(v.shape) for k, v in sd.items() if k not in masks} == param_shapes(cfg)


def test_book_dict_and_dataclass_both_work_and_bad_keys_fail():
    assert GPTModel(CFG.to_dict()).state_dict().keys() == GPTModel(CFG).state_dict().keys()
    with pytest.raises(NpgptError, match="unknown config key"):
        GPTModel({**CFG.to_dict(), "n_head": 4})
    with pytest.raises(NpgptError, match="not divisible"):
        GPTModel({**CFG.to_dict(), "emb_dim": 10})


@pytest.mark.parametrize("impl", ["book", "sdpa"])
def test_kv_cache_equals_uncached(impl):
    model = set_attention(make(), impl).eval()
    ids = torch.randint(0, CFG.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids)
        kv = KVCache(model, 2)
        parts = [model(ids[:, :3], kv)] + [model(ids[:, t : t + 1], kv) for t in range(3, 9)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_new", [4, 30])  # 30 slides the 16-token window
def test_generation_with_and_without_cache(n_new):
    model = make().eval()
    idx = torch.tensor([[1, 2, 3]])
    a = generate(model, idx, n_new, 16, use_cache=True)
    b = generate(model, idx, n_new, 16, use_cache=False)
    assert torch.equal(a, b)
    assert torch.equal(b, generate_text_simple(model, idx, n_new, 16))
    g1, g2 = (torch.Generator().manual_seed(5) for _ in range(2))
    s1 = generate(model, idx, n_new, 16, temperature=1.2, top_k=10, top_p=0.9, use_cache=True, generator=g1)
    s2 = generate(model, idx, n_new, 16, temperature=1.2, top_k=10, top_p=0.9, use_cache=False, generator=g2)
    assert torch.equal(s1, s2)


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=3)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.7)).tolist() == [[True, True, False, False]]


def test_eos_stops_generation():
    model = make().eval()
    idx = torch.tensor([[1, 2]])
    first = int(generate(model, idx, 1, 16)[0, -1])
    assert torch.equal(generate(model, idx, 5, 16, eos_id=first), idx)


def test_ids_out_of_range_is_a_clear_error():
    with pytest.raises(NpgptError, match="token id 97 is out of range"):
        generate(make(), torch.tensor([[1, 97]]), 1, 16)


def test_sdpa_matches_the_book_forward_and_backward():
    book = make(seed=1)
    fast = set_attention(make(seed=1), "sdpa")
    ids = torch.randint(0, CFG.vocab_size, (3, 12), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, CFG.vocab_size, (3, 12), generator=torch.Generator().manual_seed(2))
    losses = []
    for m in (book, fast):
        loss = torch.nn.functional.cross_entropy(m(ids).flatten(0, 1), targets.flatten())
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(book.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_sdpa_negative_control_detects_a_missing_scale():
    """If the SDPA path forgot 1/sqrt(D), the comparison above must fail."""
    book = make(seed=1).eval()
    fast = set_attention(make(seed=1), "sdpa").eval()
    for block in fast.trf_blocks:
        block.att.W_query.weight.data *= block.att.head_dim**0.5  # undo the scaling
        if block.att.W_query.bias is not None:
            block.att.W_query.bias.data *= block.att.head_dim**0.5
    ids = torch.arange(10)[None]
    assert not torch.allclose(book(ids), fast(ids), rtol=1e-4, atol=1e-4)


def test_fused_adamw_matches_the_default():
    states = []
    for fused in (False, True):
        # no qkv bias: the W_key bias gradient is exactly 0 in exact arithmetic, so Adam's update
        # m / (sqrt(v) + eps) of that tensor is the sign of round-off noise, different per kernel
        model = make(CFG.replace(qkv_bias=False), seed=3)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=fused)
        ids = torch.arange(12).reshape(2, 6)
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
            opt.step()
        states.append(model.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-5, atol=1e-6, msg=k)


def test_bf16_autocast_sanity():
    model = make(seed=4).eval()
    ids = torch.arange(16)[None] % CFG.vocab_size
    with torch.no_grad():
        ref = model(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(ids).float()
    assert (low - ref).norm() / ref.norm() < 3e-2  # bf16 has 8 bits of mantissa


@pytest.mark.slow
def test_torch_compile_matches_eager():
    from torchgpt import compile_model

    model = make(seed=6).eval()
    compiled = compile_model(model)
    ids = torch.randint(0, CFG.vocab_size, (2, 10), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids), model(ids), rtol=1e-4, atol=1e-5)
