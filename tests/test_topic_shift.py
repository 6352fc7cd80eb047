"""The segmenter's coarse rule: topic shift is TextTiling's cohesion on sentence vectors, unchanged by padding and
highest where the subject changes; coarse scores are the coarse head's values placed in the order of middle
probability x topic shift; checkpoints written before the rule load with it, and ``coarse_scoring="head"`` gives
the coarse head's probabilities back."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_block.errors import UsageError
from lit_block.segmentation.model import N_LAYOUT, SHIFT_UNITS, SegmenterHead, SegmenterNet, coarse_from_middle, topic_shift
from lit_block.segmentation.segmenter import LEVELS, Segmenter


def reference_shift(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """1 - cos(mean direction of the k units before i, of the k units from i), unit by unit."""
    direction = torch.nn.functional.normalize(vectors.double(), dim=-1)
    out = []
    for i in range(len(direction)):
        before, after = direction[max(0, i - k):i], direction[i:i + k]
        if len(before) == 0 or len(after) == 0:
            out.append(1.0)
            continue
        out.append(1 - torch.nn.functional.cosine_similarity(before.mean(0), after.mean(0), dim=0).item())
    return torch.tensor(out, dtype=torch.float64)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.integers(1, 40), st.integers(0, 99))
def test_topic_shift_equals_the_unit_by_unit_definition_and_ignores_padding(n, dim, k, seed):
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, dim, generator=g)
    shift = topic_shift(vectors, k)
    # float32 running sums, differenced: about 1e-5 of error at these lengths
    torch.testing.assert_close(shift.double(), reference_shift(vectors, k), atol=1e-4, rtol=0)
    padded = torch.cat([vectors, torch.zeros(7, dim)])[None].repeat(2, 1, 1)  # batch rows with padding after them
    torch.testing.assert_close(topic_shift(padded, k)[1, :n], shift, atol=1e-5, rtol=0)


def test_topic_shift_peaks_where_the_subject_changes():
    g = torch.Generator().manual_seed(0)
    subject_a, subject_b = torch.randn(2, 64, generator=g)
    vectors = torch.cat([subject_a.expand(30, 64), subject_b.expand(30, 64)]) + 0.5 * torch.randn(60, 64, generator=g)
    for k in (4, 16):
        assert topic_shift(vectors, k)[1:].argmax().item() + 1 == 30  # the join


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 60), st.integers(0, 99), st.floats(0.05, 0.95))
def test_coarse_scores_are_the_heads_values_placed_by_middle_times_shift(n, seed, threshold):
    g = torch.Generator().manual_seed(seed)
    vectors, middle, head = torch.randn(1, n, 8, generator=g), torch.rand(1, n, generator=g), torch.rand(1, n, generator=g)
    coarse = coarse_from_middle(middle, head, vectors)
    rule = (middle * topic_shift(vectors, SHIFT_UNITS))[0, 1:]
    # the same values as the head's (so a threshold cuts as many blocks), ordered as the rule ranks the units
    torch.testing.assert_close(coarse[0, 1:].sort().values, head[0, 1:].sort().values)
    assert (coarse[0, 1:] > threshold).sum() == (head[0, 1:] > threshold).sum()
    assert torch.all(coarse[0, 1:][rule.sort(descending=True, stable=True).indices].diff() <= 0)
    assert coarse[0, 0] == head[0, 0]  # unit 0 (the document's start) keeps its value
    padded = [torch.cat([x, torch.rand(1, 5, generator=g)], dim=1) for x in (middle, head)]  # padding must not matter
    padded_vectors = torch.cat([vectors, torch.zeros(1, 5, 8)], dim=1)
    torch.testing.assert_close(coarse_from_middle(*padded, padded_vectors, torch.tensor([n]))[:, :n], coarse)


@pytest.fixture
def checkpoint_before_the_rule(tmp_path):
    torch.manual_seed(0)
    hparams = {"encoder": "all-minilm-l6-v2", "encoder_layers": 1, "max_unit_tokens": 16, "hidden": 16,
               "gru_layers": 1, "dropout": 0.0}  # no coarse_scoring: written before the rule existed
    head = SegmenterHead(384 + N_LAYOUT, hidden=16, layers=1, levels=len(LEVELS), dropout=0.0).eval()
    path = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": hparams, "state_dict": {f"net.head.{k}": v for k, v in head.state_dict().items()}},
               path)
    return path, head


UNITS = ["In the beginning.", " God created the heaven.", "\n\nChapter 2\n", " And the earth was without form."]


def test_a_checkpoint_from_before_the_rule_scores_coarse_with_it_and_head_on_request(checkpoint_before_the_rule):
    path, head = checkpoint_before_the_rule
    net = SegmenterNet.from_checkpoint(str(path))
    features = net.unit_features(UNITS)
    with torch.inference_mode():
        probs = [torch.sigmoid(head(features[None], level))[0] for level in range(len(LEVELS))]
        rule = coarse_from_middle(probs[1][None], probs[0][None], features[None, :, :net.encoder.dim])[0]
    assert net.coarse_scoring == "topic-shift"
    torch.testing.assert_close(net.boundary_probabilities(features, 0), rule)
    for level in (1, 2):  # the other levels read the head
        torch.testing.assert_close(net.boundary_probabilities(features, level), probs[level])
    as_trained = SegmenterNet.from_checkpoint(str(path), coarse_scoring="head")
    torch.testing.assert_close(as_trained.boundary_probabilities(features, 0), probs[0])


def test_an_unknown_coarse_rule_is_named(checkpoint_before_the_rule, tiny_tokenizer_dir):
    seg = Segmenter("segmenter", str(checkpoint_before_the_rule[0]), str(tiny_tokenizer_dir), coarse_scoring="depth")
    with pytest.raises(UsageError, match="coarse_scoring must be one of topic-shift, head, got 'depth'"):
        seg.segment("One. Two.\n\nThree.", "coarse")


def test_coarse_scores_of_a_padded_batch_equal_each_document_alone(checkpoint_before_the_rule):
    # the coarse rule runs the coarse and middle heads as one batch of 2B rows: padding and the other rows change nothing
    path, _ = checkpoint_before_the_rule
    net = SegmenterNet.from_checkpoint(str(path))
    short, long = net.unit_features(UNITS[:3]), net.unit_features(UNITS + UNITS[::-1])
    batch = torch.zeros(2, len(long), short.shape[1])
    batch[0, :3], batch[1] = short, long
    with torch.inference_mode():
        together = net.level_probabilities(batch, 0, torch.tensor([3, len(long)]))
        torch.testing.assert_close(together[0, :3], net.level_probabilities(short[None], 0)[0])
        torch.testing.assert_close(together[1], net.level_probabilities(long[None], 0)[0])


@pytest.mark.parametrize("coarse_scoring", ["topic-shift", "head"])
def test_every_level_in_one_head_call_equals_one_call_per_level(checkpoint_before_the_rule, coarse_scoring):
    # training and validation run the head once on a batch of L x B rows (SegmenterNet.all_level_logits); the logits,
    # the loss and the validation scores must be those of one call per level, padding included
    from lit_block.segmentation.module import SegmenterModule

    path, _ = checkpoint_before_the_rule
    net = SegmenterNet.from_checkpoint(str(path), coarse_scoring=coarse_scoring).eval()
    short, long = net.unit_features(UNITS[:3]), net.unit_features(UNITS + UNITS[::-1])
    feats = torch.zeros(2, len(long), short.shape[1])
    feats[0, :3], feats[1] = short, long
    lengths = torch.tensor([3, len(long)])
    with torch.inference_mode():
        logits = net.all_level_logits(feats, lengths)
        scores = net.scores_from_logits(logits, feats, lengths)
        for level in range(len(LEVELS)):
            torch.testing.assert_close(logits[level], net.head(feats, level, lengths))
            torch.testing.assert_close(scores[level][0, :3], net.level_probabilities(feats, level, lengths)[0, :3])
            torch.testing.assert_close(scores[level][1], net.level_probabilities(feats, level, lengths)[1])
    module = SegmenterModule(encoder_layers=1, hidden=16, gru_layers=1, dropout=0.0, pos_weight=3.0)
    labels = torch.zeros(2, len(long), len(LEVELS), dtype=torch.long)
    labels[1, 2, :] = labels[0, 1, 2] = labels[1, 5, 1:] = 1
    mask = torch.zeros(2, len(long), dtype=torch.bool)
    mask[0, 1:3], mask[1, 1:] = True, True
    batch = {"labels": labels, "label_mask": mask}
    per_level = [torch.nn.functional.binary_cross_entropy_with_logits(
        net.head(feats, level, lengths)[mask], labels[..., level][mask].float(), pos_weight=torch.tensor(3.0))
        for level in range(len(LEVELS))]
    torch.testing.assert_close(module._loss(batch, logits), sum(per_level) / len(LEVELS))
