"""The book's printed outputs, reproduced by seeded torchgpt runs (chapters 4 and 5).

Each value below is printed in the book; they hold only if every module is created in the
book's order with the book's initialisation, and the math is the book's.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from npgpt import GPT_CONFIG_124M, get_tokenizer  # noqa: E402
from torchgpt import (  # noqa: E402
    GPTModel,
    calc_loss_loader,
    create_dataloader_v1,
    generate_text_simple,
    text_to_token_ids,
    token_ids_to_text,
)

pytestmark = pytest.mark.slow  # the 124M model: a few seconds each on CPU
CH5 = {**GPT_CONFIG_124M, "context_length": 256}


@pytest.fixture(scope="module")
def ch4_model():
    torch.manual_seed(123)
    return GPTModel(GPT_CONFIG_124M)


@pytest.fixture(scope="module")
def ch5_model():
    torch.manual_seed(123)
    return GPTModel(CH5).eval()


def test_ch4_parameter_count(ch4_model):
    assert sum(p.numel() for p in ch4_model.parameters()) == 163_009_536


def test_ch4_first_forward_in_train_mode(ch4_model):
    # chapter 4 calls the fresh model in train mode (dropout on) right after the seeded init
    batch = torch.tensor([[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]])
    torch.manual_seed(123)
    model = GPTModel(GPT_CONFIG_124M)
    out = model(batch)
    assert out.shape == (2, 4, 50257)
    torch.testing.assert_close(out[0, 0, :3], torch.tensor([0.3613, 0.4222, -0.0711]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1, 0, :3], torch.tensor([-0.2564, 0.0900, 0.0335]), atol=1e-4, rtol=0)


def test_ch4_greedy_generation(ch4_model):
    ch4_model.eval()
    out = generate_text_simple(ch4_model, torch.tensor([[15496, 11, 314, 716]]), 6, 1024)
    assert out.tolist() == [[15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]]


def test_ch5_untrained_text(ch5_model):
    tok = get_tokenizer()
    ids = generate_text_simple(ch5_model, text_to_token_ids("Every effort moves you", tok), 10, 256)
    text = token_ids_to_text(ids, tok)
    assert text.startswith("Every effort moves you rentingetic wasn")
    assert "refres RexMeCHicular stren" in text


def test_ch5_argmax_and_target_probabilities(ch5_model):
    inputs = torch.tensor([[16833, 3626, 6100], [40, 1107, 588]])
    targets = torch.tensor([[3626, 6100, 345], [588, 428, 11311]])
    with torch.no_grad():
        logits = ch5_model(inputs)
    probas = torch.softmax(logits, dim=-1)
    assert probas.argmax(-1).tolist() == [[16657, 339, 42826], [49906, 29669, 41751]]
    p1 = probas[0, [0, 1, 2], targets[0]]
    p2 = probas[1, [0, 1, 2], targets[1]]
    torch.testing.assert_close(p1, torch.tensor([7.4541e-05, 3.1061e-05, 1.1563e-05]), rtol=2e-4, atol=0)
    torch.testing.assert_close(p2, torch.tensor([3.9836e-05, 1.6783e-05, 4.7559e-06]), rtol=2e-4, atol=0)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    assert loss.item() == pytest.approx(10.7722, abs=1e-4)


def test_ch5_initial_losses_on_the_verdict(ch5_model, verdict_text):
    split_idx = int(0.90 * len(verdict_text))
    torch.manual_seed(123)
    train_loader = create_dataloader_v1(verdict_text[:split_idx], 2, 256, 256, shuffle=True, drop_last=True)
    val_loader = create_dataloader_v1(verdict_text[split_idx:], 2, 256, 256, shuffle=False, drop_last=False)
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, ch5_model, "cpu")
        val_loss = calc_loss_loader(val_loader, ch5_model, "cpu")
    assert train_loss == pytest.approx(10.98758347829183, abs=1e-4)
    assert val_loss == pytest.approx(10.98110580444336, abs=1e-4)
