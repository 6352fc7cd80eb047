"""``DistillDataModule``: corpus documents cut into context blocks by any segmentation method.

Each document of the corpus (``lit-block data build``) is tokenized once with the teacher's
tokenizer and segmented once (``method``: the trained segmenter with ``checkpoint``, or any
baseline, at ``granularity`` with hard ``min/max_block_tokens``). Windows of ``sample_tokens``
tokens become packed samples: the blocks that fall in the window's first
``sample_tokens - global_tokens`` tokens are the context blocks (a block the window edge cuts
keeps its part), and the last ``global_tokens`` tokens -- the document's continuation -- are the
global block, whose tokens (after its first) are scored. Splits follow the corpus's splits, so
evaluation documents are held out.

With ``rag_tasks`` (``faq``, ``definition``, ``headword``: ``lit_block.rag.corpus_tasks``), RAG-style
samples constructed from the same split are mixed in: an instruction block and one block per
passage as context, the question and its reference answer as the global block (the answer's tokens
scored), in the prompt format ``lit-block eval-rag`` uses.
"""

from __future__ import annotations

import functools

import lightning as L
from torch.utils.data import DataLoader

from datamodules.dataset_identity import DatasetIdentity, corpus_identity
from datamodules.document_selection import select_documents
from datamodules.seeded_loader import seeded_loader
from datamodules.text_blocks import collate_packed
from lit_block.errors import check_number
from lit_block.layout import pack_tokens
from lit_block.segmentation.segmenter import parse_granularity

SPLITS = {"train": "train", "val": "validation", "test": "test"}
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}  # what each stage reads


def window_samples(ids: list[int], cuts: list[int], sample_tokens: int, global_tokens: int,
                   offset: int = 0) -> list[dict]:
    """Packed samples from one document's token ids and block starts (token positions).

    Windows tile the document from token ``offset`` on; another offset gives other windows of the same
    text (other context blocks at the edges, another continuation as the global block)."""
    samples = []
    cut_set = sorted(set(cuts))
    for start in range(offset, len(ids) - sample_tokens + 1, sample_tokens):
        split = start + sample_tokens - global_tokens
        edges = [start, *(c for c in cut_set if start < c < split), split]
        context = [ids[a:b] for a, b in zip(edges, edges[1:])]
        ids_, blocks = pack_tokens(context, ids[split : start + sample_tokens])
        target = [False] * (split - start + 1) + [True] * (global_tokens - 1)
        samples.append({"input_ids": ids_, "block_ids": blocks, "target_mask": target})
    return samples


def add_sample_arguments(parser, max_documents: int) -> None:
    """The options that shape ``DistillDataModule`` samples, for scripts and commands that build them."""
    parser.add_argument("--dataset", default="data/semanticseg", help="corpus folder (lit-block data build)")
    parser.add_argument("--method", default="sentence", help="segmentation method that cuts the context into blocks")
    parser.add_argument("--checkpoint", default=None, help="segmenter checkpoint (with --method segmenter)")
    parser.add_argument("--granularity", default="256", help="coarse, middle, fine, or a target block size in tokens")
    parser.add_argument("--min-block-tokens", type=int, default=128, help="smallest context block (tokens)")
    parser.add_argument("--max-block-tokens", type=int, default=512, help="largest context block (tokens)")
    parser.add_argument("--sample-tokens", type=int, default=1024, help="tokens per sample, global block included")
    parser.add_argument("--global-tokens", type=int, default=256, help="tokens of the global block that ends a sample")
    parser.add_argument("--max-documents", type=int, default=max_documents, help="documents read per split")


def data_from_arguments(args, **kwargs) -> DistillDataModule:
    """A ``DistillDataModule`` from the options of :func:`add_sample_arguments` (plus ``kwargs``)."""
    return DistillDataModule(dataset_path=args.dataset, method=args.method, checkpoint=args.checkpoint,
                             granularity=args.granularity, min_block_tokens=args.min_block_tokens,
                             max_block_tokens=args.max_block_tokens, sample_tokens=args.sample_tokens,
                             global_tokens=args.global_tokens, max_documents=args.max_documents, **kwargs)


class DistillDataModule(L.LightningDataModule):
    def __init__(
        self,
        dataset_path: str = "data/semanticseg",
        tokenizer: str = "smollm2-135m",
        method: str = "sentence",
        checkpoint: str | None = None,
        granularity: str | int = 256,
        min_block_tokens: int = 128,
        max_block_tokens: int | None = 512,
        sample_tokens: int = 1024,
        global_tokens: int = 256,
        categories: list[str] | None = None,
        max_documents: int | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        seed: int = 0,
        rag_tasks: list[str] | None = None,
        rag_passages: int = 5,
        rag_max_samples: int | None = 200,
    ):
        super().__init__()
        check_number("sample_tokens", sample_tokens, low=2, integer=True)
        check_number("global_tokens", global_tokens, low=1, high=sample_tokens - 1, integer=True)  # context needs room
        check_number("min_block_tokens", min_block_tokens, low=0, integer=True)
        if max_block_tokens is not None:
            check_number("max_block_tokens", max_block_tokens, low=max(1, 2 * min_block_tokens), integer=True)
        check_number("batch_size", batch_size, low=1, integer=True)
        check_number("num_workers", num_workers, low=0, integer=True)
        check_number("rag_passages", rag_passages, low=1, integer=True)
        parse_granularity(granularity)  # a level or a positive token count, named if not
        self.save_hyperparameters()
        self.samples: dict[str, list[dict]] = {}
        self.pad_token_id = 0  # padding is masked out of attention and loss: any id works

    def segment_documents(self, rows, segmenter) -> list[tuple[list[int], list[int]]]:
        """Each document's token ids and block starts, cut by ``method`` at ``granularity`` within the limits."""
        from lit_block.segmentation.planner import BlockLimits

        h = self.hparams
        limits = BlockLimits(h.min_block_tokens, h.max_block_tokens)
        out = []
        for row in rows:
            doc = segmenter.prepare(row["text"])
            out.append((doc.token_ids, segmenter.cut(doc, h.granularity, limits=limits)))
        return out

    def _segment_split(self, rows, segmenter) -> list[dict]:
        h = self.hparams
        return [s for ids, cuts in self.segment_documents(rows, segmenter)
                for s in window_samples(ids, cuts, h.sample_tokens, h.global_tokens)]

    def _rag_split(self, split: str, tokenizer) -> list[dict]:
        """RAG samples of one corpus split, packed; those longer than ``sample_tokens`` are left out."""
        import warnings

        from lit_block.rag.corpus_tasks import build_corpus_tasks
        from lit_block.segmentation.document import encode
        from lit_block.rag.prompt import TEMPLATES, RagPrompt, default_template, pack_rag_sample

        h = self.hparams
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a split without FAQ documents is normal
            rag = build_corpus_tasks(h.dataset_path, tasks=tuple(h.rag_tasks), splits=(split,),
                                     num_passages=h.rag_passages, max_samples_per_task=h.rag_max_samples, seed=h.seed)
        prompt = RagPrompt(*TEMPLATES[default_template(tokenizer)])
        packed = [pack_rag_sample(sample, prompt, lambda text: encode(tokenizer, text)[0]) for sample in rag]
        return [p for p in packed if len(p["input_ids"]) <= h.sample_tokens]

    def dataset_identity(self) -> DatasetIdentity:
        """The corpus this module reads (recorded on the MLflow run by ``callbacks.DatasetRecord``)."""
        return corpus_identity(self.hparams.dataset_path)

    def setup(self, stage: str | None = None) -> None:
        """Segment the splits ``stage`` needs (all of them without a stage), once each."""
        needed = [n for n in STAGE_SPLITS.get(stage, tuple(SPLITS)) if n not in self.samples]
        if not needed:
            return
        from pathlib import Path

        from datasets import load_from_disk

        from lit_block.segmentation.segmenter import Segmenter, parse_granularity

        h = self.hparams
        if not Path(h.dataset_path).is_dir():
            raise FileNotFoundError(f"no corpus at {h.dataset_path}: build one with `lit-block data build`")
        parse_granularity(h.granularity)
        segmenter = Segmenter(h.method, h.checkpoint, tokenizer=h.tokenizer)
        data = load_from_disk(h.dataset_path)
        for name in needed:
            split = SPLITS[name]
            if split not in data:
                continue
            rows = select_documents(data[split], h.categories, limit=h.max_documents)
            self.samples[name] = self._segment_split(rows, segmenter)
            if h.rag_tasks:
                self.samples[name] += self._rag_split(split, segmenter.tokenizer)

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        if not self.samples.get(name):
            raise ValueError(f"no {name} samples of {self.hparams.sample_tokens} tokens in {self.hparams.dataset_path}")
        h = self.hparams
        return seeded_loader(self.samples[name], h.batch_size, shuffle, h.seed, h.num_workers,
                             functools.partial(collate_packed, pad_token_id=self.pad_token_id))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
