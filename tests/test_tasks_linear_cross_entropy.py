"""The chunked projection + cross-entropy gives the plain formulation's loss, counts and gradients."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import nlp_ssl.tasks.linear_cross_entropy as lce
from nlp_ssl.tasks.base import cross_entropy_sum
from nlp_ssl.tasks.linear_cross_entropy import linear_cross_entropy_sum
from nlp_ssl.tasks.masked_lm import MaskedLMTask, _split_projection, masked_positions_loss


def grads(*tensors):
    return [t.grad.clone() for t in tensors]


def plain_and_fused(hidden, linear, labels, scale=0.37):
    """Both formulations' (loss, count, correct) and gradients of hidden, weight and bias."""
    out = {}
    formulations = {"plain": lambda h: cross_entropy_sum(linear(h), labels),
                    "fused": lambda h: linear_cross_entropy_sum(h, linear, labels)}
    for name, fn in formulations.items():
        linear.zero_grad()
        h = hidden.clone().requires_grad_()
        loss, count, correct = fn(h)
        (loss * scale).backward()  # the trainer divides by the step's count and weights the loss
        out[name] = (loss.detach(), int(count), int(correct), grads(h, linear.weight, linear.bias))
    return out["plain"], out["fused"]


@pytest.mark.parametrize("rows", [1, 37, 300])
def test_fused_matches_plain_over_several_chunks(monkeypatch, rows):
    monkeypatch.setattr(lce, "CHUNK_ELEMENTS", 16 * 500)  # 16 rows a chunk: 300 rows = 18 full chunks + 12
    torch.manual_seed(rows)
    linear = nn.Linear(24, 500)
    hidden, labels = torch.randn(rows, 24), torch.randint(0, 500, (rows,))
    (loss, count, correct, g), (loss2, count2, correct2, g2) = plain_and_fused(hidden, linear, labels)
    assert (count2, correct2) == (count, correct) == (rows, correct)
    torch.testing.assert_close(loss2, loss, rtol=1e-6, atol=1e-5)
    for a, b in zip(g2, g):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_correct_counts_ties_as_argmax_does():
    linear = nn.Linear(4, 3)
    with torch.no_grad():
        linear.weight[1] = linear.weight[0]  # classes 0 and 1 always tie: argmax says 0
        linear.bias[1] = linear.bias[0] = 5.0
        linear.bias[2] = -5.0
    hidden = torch.zeros(4, 4)
    labels = torch.tensor([0, 1, 1, 2])
    _, _, correct = linear_cross_entropy_sum(hidden, linear, labels)
    assert int(correct) == int(cross_entropy_sum(linear(hidden), labels)[2]) == 1


def test_no_grad_returns_the_loss_without_gradients():
    torch.manual_seed(0)
    linear = nn.Linear(8, 40)
    hidden, labels = torch.randn(10, 8, requires_grad=True), torch.randint(0, 40, (10,))
    with torch.no_grad():
        loss, count, _ = linear_cross_entropy_sum(hidden, linear, labels)
    assert not loss.requires_grad and int(count) == 10
    assert loss.item() == pytest.approx(F.cross_entropy(linear(hidden), labels, reduction="sum").item(), rel=1e-6)


def test_bf16_autocast_matches_plain_within_bf16_rounding():
    torch.manual_seed(1)
    linear = nn.Linear(32, 300)
    hidden, labels = torch.randn(50, 32), torch.randint(0, 300, (50,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (loss, count, correct, g), (loss2, count2, correct2, g2) = plain_and_fused(hidden, linear, labels)
    assert (count2, correct2) == (count, correct) and all(t.dtype == torch.float32 for t in g2)
    torch.testing.assert_close(loss2, loss, rtol=1e-5, atol=1e-3)  # same bf16 logits, fp32 softmax
    for a, b in zip(g2, g):
        torch.testing.assert_close(a, b, rtol=0.02, atol=0.02 * b.abs().max().item())


def test_masked_lm_task_takes_the_fused_path_with_the_same_loss_and_gradients(monkeypatch):
    from nlp_ssl.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="modernbert", size="tiny"), "masked_lm", vocab_size=300, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
    task = MaskedLMTask(model).train()
    assert _split_projection(nn.Sequential(model.head, model.decoder))[1] is model.decoder
    ids = torch.randint(5, 300, (3, 16))
    labels = torch.where(torch.rand(3, 16) < 0.3, ids, torch.full_like(ids, -100))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    calls = []
    monkeypatch.setattr("nlp_ssl.tasks.masked_lm.linear_cross_entropy_sum",
                        lambda *a: calls.append(1) or linear_cross_entropy_sum(*a))

    def loss_and_grads():
        model.zero_grad()
        torch.manual_seed(2)  # same dropout
        loss, count = task(**batch)["losses"]["loss"]
        (loss / count).backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fused_loss, fused_grads = loss_and_grads()
    assert calls == [1]
    monkeypatch.setattr("nlp_ssl.tasks.masked_lm.use_fused", lambda hidden: False)
    plain_loss, plain_grads = loss_and_grads()
    assert calls == [1]
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-6, atol=1e-5)
    assert fused_grads.keys() == plain_grads.keys() and "decoder.bias" in plain_grads
    for name in plain_grads:
        torch.testing.assert_close(fused_grads[name], plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_heads_that_do_not_end_in_a_linear_keep_the_plain_path():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = nn.Linear(4, 10)

        def forward(self, x):
            return self.decoder(x) * 2

    head = Head()
    assert _split_projection(head) is None
    hidden, labels = torch.randn(2, 3, 4), torch.tensor([[1, -100, 3], [-100, -100, 9]])
    loss, count, _ = masked_positions_loss(hidden, labels, head)
    keep = labels != -100
    assert int(count) == 3
    assert loss.item() == pytest.approx(F.cross_entropy(head(hidden[keep]), labels[keep], reduction="sum").item(), rel=1e-6)
