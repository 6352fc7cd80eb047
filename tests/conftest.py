"""Shared fixtures: tiny model configs built in code, a tiny tokenizer trained on bundled text, no network."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """``scripts/<name>.py`` as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def tiny_config(family: str = "llama", vocab_size: int = 128):
    """A 2-layer, hidden-64 random config of a RoPE family (GQA: 4 query heads, 2 KV heads)."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig}[family]
    extra = {"sliding_window": None} if family == "mistral" else {}
    if family == "qwen3":
        extra["head_dim"] = 16
    return cls(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=0, **TINY, **extra)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A 512-token BPE tokenizer trained on the bundled KJV texts, saved as an HF tokenizer folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_tokenizer")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    tok.train([str(p) for p in sorted((REPO / "datamodules" / "texts").glob("*.txt"))], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny random Llama saved with the tiny tokenizer: a stand-in for a real checkpoint folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny_llama")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama", vocab_size=512))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory) -> Path:
    """A small corpus in the built schema, from the bundled KJV texts: chapter / 4-verse group / verse."""
    from datasets import Dataset, DatasetDict

    rows = []
    for path in sorted((REPO / "datamodules" / "texts").glob("*.txt")):
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        offsets = [sum(map(len, lines[:i])) for i in range(len(lines))]
        chapter = [o for o, ln in zip(offsets, lines) if ln[:1].isalpha() and o > 0]
        verse = [o for o, ln in zip(offsets, lines) if ln[:1].isdigit() and o > 0]
        starts = sorted(set(chapter) | {v for i, v in enumerate(verse) if i % 4 == 0})
        rows.append({"id": path.stem, "text": text, "source": "kjv",
                     "category": "religious" if "genesis" not in path.stem else "origins",
                     "boundaries_coarse": chapter, "boundaries_middle": starts, "boundaries_fine": sorted(set(starts) | set(verse))})
    splits = {"train": rows[:2], "validation": rows[2:3], "test": rows[3:]}
    folder = tmp_path_factory.mktemp("tiny_corpus")
    DatasetDict({k: Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory):
    """A segmenter checkpoint in the trained format with a random head (spread out: probabilities far apart),
    on the embedded encoder's first 2 layers: what the speed path runs, without training."""
    from lit_block.segmentation.model import N_LAYOUT, SegmenterHead
    from lit_block.segmentation.segmenter import LEVELS

    torch.manual_seed(0)
    hparams = {"encoder": "all-minilm-l6-v2", "encoder_layers": 2, "max_unit_tokens": 24, "hidden": 32,
               "gru_layers": 2, "dropout": 0.0}
    head = SegmenterHead(384 + N_LAYOUT, hidden=32, layers=2, levels=len(LEVELS), dropout=0.0)
    with torch.no_grad():
        head.out.weight.mul_(20)
    path = tmp_path_factory.mktemp("random_segmenter") / "segmenter.ckpt"
    torch.save({"hyper_parameters": hparams, "state_dict": {f"net.head.{k}": v for k, v in head.state_dict().items()}},
               path)
    return path


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def decode_together(batch, answers, joins=None, store=None, after_step=None, queries_in_slab=False) -> None:
    """Answers decoded in one ``DecodeBatch`` until each ends: answer i is prefilled (from ``store``) and joins at step
    ``joins[i]`` (``joins=None``: all prefilled already, decoding from the start); ``after_step(active)`` runs after
    each batched step. ``queries_in_slab``: the answers joining at one step run their queries together in the slab's
    rows (``DecodeBatch.prefill``), each over its own assembled context, instead of each prefilled alone."""
    active = [] if joins is not None else list(answers)
    joins, step = joins or [-1] * len(answers), 0
    while step <= max(joins) or active:
        joining = [answer for answer, join in zip(answers, joins) if join == step]
        if queries_in_slab and joining:
            for answer in joining:
                answer.assemble(store)
            for answer, logits in zip(joining, batch.prefill(joining)):
                answer.prefilled(logits)
        else:
            for answer in joining:  # own_cache: on CUDA the query runner's static buffers serve the next prefill
                answer.prefill(store, own_cache=True)
        active += joining
        chosen = [(a, a.choose()) for a in active]
        active = [a for a, token in chosen if token is not None]
        if active:
            batch.step(active, [token for _, token in chosen if token is not None])
            if after_step is not None:
                after_step(active)
        step += 1
