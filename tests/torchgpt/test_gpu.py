"""GPU checks (marker ``gpu``): skipped without CUDA, run on a lent GPU through the device tool."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from npgpt import GPTConfig  # noqa: E402
from torchgpt import GPTModel, enable_tf32, set_attention  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
CFG = GPTConfig(vocab_size=1000, context_length=128, emb_dim=256, n_heads=8, n_layers=2, drop_rate=0.0)


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    book = GPTModel(CFG).cuda()
    fast = set_attention(GPTModel(CFG).cuda(), "sdpa")
    fast.load_state_dict(book.state_dict())
    return book, fast


def test_sdpa_on_cuda_matches_the_book_in_float32_with_tf32_off():
    enable_tf32(False)
    book, fast = _pair()
    ids = torch.randint(0, CFG.vocab_size, (4, 128), device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(fast(ids), book(ids), rtol=1e-4, atol=1e-4)


def test_bf16_autocast_on_cuda_is_close():
    enable_tf32(False)
    book, _ = _pair(1)
    ids = torch.randint(0, CFG.vocab_size, (4, 128), device="cuda")
    with torch.no_grad():
        ref = book(ids)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = book(ids).float()
    assert ((low - ref).norm() / ref.norm()).item() < 3e-2
