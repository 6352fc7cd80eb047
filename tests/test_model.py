"""BlockAttentionLM: exact against independent per-block encoding with the plain HF model."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, GPT2Config

from conftest import tiny_config
from lit_block import BlockAttentionLM


def reference_logits(hf_model, blocks, global_block, sink_embeds=None):
    """Each block alone through the plain HF model at its own positions, then the global block on the joint KV cache.

    Returns the logits of every caller token (sinks dropped), ``[1, S, V]``.
    """
    cfg = hf_model.config
    embed = hf_model.get_input_embeddings()
    joint = DynamicCache(config=cfg)
    logits, offset = [], 0
    for block in blocks:
        x = embed(block[None])
        if sink_embeds is not None:
            x = torch.cat([sink_embeds[None], x], dim=1)
        n = x.shape[1]
        own = DynamicCache(config=cfg)
        out = hf_model(inputs_embeds=x, position_ids=torch.arange(offset, offset + n)[None], past_key_values=own)
        logits.append(out.logits[:, n - len(block) :])
        for layer in range(cfg.num_hidden_layers):
            joint.update(own.layers[layer].keys, own.layers[layer].values, layer)
        offset += n
    g = len(global_block)
    out = hf_model(input_ids=global_block[None], position_ids=torch.arange(offset, offset + g)[None], past_key_values=joint)
    return torch.cat(logits + [out.logits], dim=1)


def plain_copy(lm: BlockAttentionLM):
    """The same weights in a stock transformers model with its stock sdpa attention."""
    # a copy of the config: from_config would otherwise switch the wrapped model to sdpa too
    ref = AutoModelForCausalLM.from_config(copy.deepcopy(lm.config), attn_implementation="sdpa")
    ref.load_state_dict(lm.model.state_dict())
    return ref.eval()


@pytest.mark.parametrize("family", ["llama", "qwen3", "qwen2", "mistral"])
@pytest.mark.parametrize("num_sinks", [0, 2])
def test_block_attention_equals_independent_per_block_encoding(family, num_sinks):
    torch.manual_seed(0)
    lm = BlockAttentionLM.from_pretrained(tiny_config(family), num_sink_tokens=num_sinks).eval()
    with torch.no_grad():
        lm.sink_embeddings.normal_()  # sinks that differ from BOS, so a misplaced sink shows
    blocks = [torch.randint(0, 128, (n,)) for n in (6, 1, 9, 3)]
    global_block = torch.randint(0, 128, (5,))
    input_ids = torch.cat(blocks + [global_block])[None]
    block_ids = torch.cat([torch.full((len(b),), i) for i, b in enumerate(blocks)] + [torch.full((5,), -1)])[None]
    with torch.no_grad():
        ours = lm(input_ids, block_ids).logits
        ref = reference_logits(plain_copy(lm), blocks, global_block, lm.sink_embeddings if num_sinks else None)
    assert ours.shape == (1, input_ids.shape[1], 128)
    assert (ours - ref).abs().max() <= 1e-4


def test_batched_padded_forward_equals_each_sample_alone():
    torch.manual_seed(0)
    lm = BlockAttentionLM.from_pretrained(tiny_config("qwen3"), num_sink_tokens=1).eval()
    a_ids, a_blocks = torch.randint(0, 128, (1, 12)), torch.tensor([[0] * 4 + [1] * 5 + [-1] * 3])
    b_ids, b_blocks = torch.randint(0, 128, (1, 7)), torch.tensor([[0] * 2 + [-1] * 5])
    ids = torch.zeros(2, 12, dtype=torch.long)
    blocks = torch.full((2, 12), -1)
    mask = torch.zeros(2, 12, dtype=torch.long)
    ids[0], blocks[0], mask[0] = a_ids[0], a_blocks[0], 1
    ids[1, :7], blocks[1, :7], mask[1, :7] = b_ids[0], b_blocks[0], 1
    with torch.no_grad():
        batched = lm(ids, blocks, mask).logits
        alone_a = lm(a_ids, a_blocks).logits
        alone_b = lm(b_ids, b_blocks).logits
    assert (batched[0] - alone_a[0]).abs().max() <= 1e-5
    assert (batched[1, :7] - alone_b[0]).abs().max() <= 1e-5


def test_full_attention_is_the_plain_model_and_differs_from_block_attention():
    torch.manual_seed(0)
    lm = BlockAttentionLM.from_pretrained(tiny_config("llama")).eval()
    ids = torch.randint(0, 128, (1, 16))
    blocks = torch.tensor([[0] * 6 + [1] * 6 + [-1] * 4])
    with torch.no_grad():
        full = lm(ids, blocks, full_attention=True).logits
        plain = plain_copy(lm)(input_ids=ids).logits
        block = lm(ids, blocks).logits
    assert (full - plain).abs().max() <= 1e-5
    assert (full[:, 6:] - block[:, 6:]).abs().max() > 1e-3  # later blocks lose context: logits change
    assert (full[:, :6] - block[:, :6]).abs().max() <= 1e-5  # the first block sees the same either way


def test_sink_embeddings_get_gradients_and_survive_save_and_load(tmp_path):
    torch.manual_seed(0)
    lm = BlockAttentionLM.from_pretrained(tiny_config("llama"), num_sink_tokens=2)
    ids, blocks = torch.randint(0, 128, (1, 10)), torch.tensor([[0] * 4 + [1] * 3 + [-1] * 3])
    lm(ids, blocks).logits[:, -1].sum().backward()
    assert lm.sink_embeddings.grad is not None and lm.sink_embeddings.grad.abs().sum() > 0
    with torch.no_grad():
        lm.sink_embeddings.add_(1.0)
    lm.save_pretrained(tmp_path)
    loaded = BlockAttentionLM.from_pretrained(tmp_path).eval()
    assert loaded.num_sink_tokens == 2
    assert torch.equal(loaded.sink_embeddings, lm.sink_embeddings.detach())
    with torch.no_grad():
        assert torch.allclose(loaded(ids, blocks).logits, lm.eval()(ids, blocks).logits, atol=1e-5)
    with pytest.raises(ValueError, match="saved with 2 sink tokens"):
        BlockAttentionLM.from_pretrained(tmp_path, num_sink_tokens=3)


def test_model_without_rope_is_refused():
    with pytest.raises(ValueError, match="no rotary position embedding"):
        BlockAttentionLM.from_pretrained(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))


def test_negative_sink_count_is_refused():
    with pytest.raises(ValueError, match="num_sink_tokens must be >= 0"):
        BlockAttentionLM.from_pretrained(tiny_config("llama"), num_sink_tokens=-1)


def test_switching_the_shared_config_away_from_block_attention_is_caught():
    lm = BlockAttentionLM.from_pretrained(tiny_config("llama"))
    AutoModelForCausalLM.from_config(lm.config, attn_implementation="sdpa")  # mutates the shared config
    with pytest.raises(RuntimeError, match="attention implementation was switched"):
        lm(torch.zeros(1, 4, dtype=torch.long), torch.tensor([[0, 0, -1, -1]]))
