"""Loss functions against hand-written equivalents and edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from lit_block.losses import next_token_nll


def test_next_token_nll_equals_a_hand_computed_sum():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 0, 0, 1]], dtype=torch.bool)
    total, count = next_token_nll(logits, ids, mask)
    want = 0.0
    for b, t in [(0, 2), (0, 3), (1, 1), (1, 4)]:  # token t is predicted by position t - 1
        want -= torch.log_softmax(logits[b, t - 1], dim=-1)[ids[b, t]].item()
    assert count == 4
    assert math.isclose(total.item(), want, rel_tol=1e-6)


def test_next_token_nll_with_no_target_is_zero_and_differentiable():
    logits = torch.randn(1, 3, 4, requires_grad=True)
    total, count = next_token_nll(logits, torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool))
    assert count == 0 and total.item() == 0.0
    total.backward()
    assert logits.grad is not None


def test_next_token_nll_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="shapes disagree"):
        next_token_nll(torch.randn(1, 3, 4), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3, dtype=torch.bool))


from lit_block.losses import chunked_distillation_loss  # noqa: E402


def _heads(vocab=11, hidden=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(hidden, vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden, generator=g))
    return head, torch.randn(9, hidden, generator=g, requires_grad=True), torch.randn(9, hidden, generator=g)


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_chunked_divergence_equals_the_unchunked_formula_and_its_gradient(divergence, chunk):
    head, s_h, t_h = _heads()
    w = torch.tensor([1.0, 0, 2, 1, 1, 0.5, 1, 1, 3])
    total, wsum = chunked_distillation_loss(s_h, t_h, head, w, divergence=divergence, temperature=2.0, chunk_size=chunk)
    grad = torch.autograd.grad(total, s_h)[0]
    s = (head(s_h) / 2.0).log_softmax(-1)
    t = (head(t_h) / 2.0).log_softmax(-1).detach()
    if divergence == "forward_kl":
        per = (t.exp() * (t - s)).sum(-1)
    elif divergence == "reverse_kl":
        per = (s.exp() * (s - t)).sum(-1)
    else:
        m = (0.5 * t.exp() + 0.5 * s.exp()).log()
        per = 0.5 * (t.exp() * (t - m)).sum(-1) + 0.5 * (s.exp() * (s - m)).sum(-1)
    want = (per * w).sum() * 4.0
    torch.testing.assert_close(total, want)
    torch.testing.assert_close(grad, torch.autograd.grad(want, s_h)[0])
    assert wsum.item() == w.sum().item()


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_compiled_chunk_divergence_equals_eager_in_value_and_gradient(divergence):
    """``compile=`` traces the per-chunk softmaxes and divergence (``aot_eager`` here: the same graphs inductor
    gets, without generating kernels on a CPU); chunks of 4, 4 and 1 rows exercise the varying chunk length."""
    head, s_h, t_h = _heads()
    w = torch.tensor([1.0, 0, 2, 1, 1, 0.5, 1, 1, 3])
    results = []
    for compile in (None, "aot_eager"):
        total, _ = chunked_distillation_loss(s_h, t_h, head, w, divergence=divergence, temperature=2.0, chunk_size=4,
                                             compile=compile)
        results.append((total, torch.autograd.grad(total, s_h)[0]))
    (eager, eager_grad), (compiled, compiled_grad) = results
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(compiled_grad, eager_grad)


def test_identical_distributions_have_zero_divergence():
    head, s_h, _ = _heads()
    total, _ = chunked_distillation_loss(s_h, s_h.detach(), head, torch.ones(9))
    assert abs(total.item()) < 1e-5


def test_vocabulary_mismatch_is_named():
    head, s_h, t_h = _heads()
    other = torch.nn.Linear(6, 12, bias=False)
    with pytest.raises(ValueError, match="teacher vocabulary \\(12\\) differs from the student's \\(11\\)"):
        chunked_distillation_loss(s_h, t_h, head, torch.ones(9), teacher_lm_head=other)


@pytest.mark.parametrize("chunk,compile", [(1, None), (3, None), (7, None), (100, None), (3, "aot_eager")])
def test_chunked_token_divergence_equals_kl_div_on_whole_logits(chunk, compile):
    from lit_block.losses import chunked_token_divergence

    torch.manual_seed(0)
    head = torch.nn.Linear(6, 11, bias=False)
    hidden, reference = torch.randn(7, 6), torch.randn(7, 6)
    got = chunked_token_divergence(hidden, reference, head, chunk_size=chunk, compile=compile)
    # KL(reference || hidden) per position, by torch's own kl_div on the whole [N, V] logits
    want = torch.nn.functional.kl_div(head(hidden).log_softmax(-1), head(reference).log_softmax(-1), log_target=True,
                                      reduction="none").sum(-1)
    assert got.shape == (7,) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert (chunked_token_divergence(reference, reference, head, chunk_size=chunk).abs() < 1e-6).all()


def test_chunked_token_divergence_edge_cases_and_errors():
    from lit_block.losses import chunked_token_divergence

    head = torch.nn.Linear(4, 5, bias=False)
    assert chunked_token_divergence(torch.zeros(0, 4), torch.zeros(0, 4), head).shape == (0,)
    with pytest.raises(ValueError, match="disagree"):
        chunked_token_divergence(torch.zeros(3, 4), torch.zeros(2, 4), head)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_token_divergence(torch.zeros(3, 4), torch.zeros(3, 4), head, chunk_size=0)
    with pytest.raises(ValueError, match="divergence"):
        chunked_token_divergence(torch.zeros(3, 4), torch.zeros(3, 4), head, divergence="kl")
