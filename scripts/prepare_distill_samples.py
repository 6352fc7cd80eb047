"""Prepare the samples that ``scripts/distill_recipe.py`` trains and scores on a GPU machine.

The lent GPU image has no ``datasets`` and no corpus, so the samples are built here with the same
code the YAML experiments use (``DistillDataModule``) and saved as plain tensors:

    python scripts/prepare_distill_samples.py --dataset data/semanticseg --out .gpu/samples.pt

* ``train`` / ``val``: ``DistillDataModule`` samples (corpus splits, so validation documents are
  held out), ``--sample-tokens`` long, context cut by ``--method`` at ``--granularity``, the last
  ``--global-tokens`` of each window as the global block; train samples shuffled with ``--seed``.
* ``ood``: text the corpus does not contain (``--ood-files``), cut into fixed blocks the way
  ``TextBlocksDataModule`` does, for the out-of-corpus check.
* ``train_documents`` (with ``--train-documents``): the training split's documents themselves, their
  token ids (uint16, concatenated) and block starts, so the GPU recipe (``scripts/distill_recipe.py``) can
  tile them into windows at several offsets: more distinct samples than a file of windows could carry.
* ``heldout``: per text family of a held-out build (``lit-block data build --heldout``, not in the
  training corpus), ``--heldout-windows`` windows cut like ``ood``.
* ``rag``: RAG samples constructed from the corpus (``lit_block.rag.build_corpus_tasks`` on
  ``--rag-splits``), as plain dicts, for ``lit-block eval-rag``'s scoring of each trained model.

Every split is ``{"input_ids": [N, S] int32, "block_ids": [N, S] int8}``; ``meta`` records the settings.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import torch

from datamodules.distill import add_sample_arguments, data_from_arguments
from datamodules.document_selection import select_documents


def stack(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Equal-length packed samples as ``[N, S]`` tensors (block ids fit in int8: at most 127 blocks)."""
    lengths = {len(s["input_ids"]) for s in samples}
    if len(lengths) != 1:
        raise ValueError(f"samples have different lengths {sorted(lengths)}; expected one")
    ids = torch.tensor([s["input_ids"] for s in samples], dtype=torch.int32)
    blocks = torch.tensor([s["block_ids"] for s in samples], dtype=torch.int16)
    if blocks.max() > 127:
        raise ValueError(f"a sample has {int(blocks.max()) + 1} blocks, more than int8 holds")
    return {"input_ids": ids, "block_ids": blocks.to(torch.int8)}


def train_documents(data, dataset: str) -> dict[str, torch.Tensor]:
    """The training split's documents (those ``data`` reads) as concatenated uint16 ids and block starts."""
    from datasets import load_from_disk

    from lit_block.segmentation.segmenter import Segmenter

    h = data.hparams
    rows = select_documents(load_from_disk(dataset)["train"], h.categories, limit=h.max_documents)
    docs = data.segment_documents(rows, Segmenter(h.method, h.checkpoint, tokenizer=h.tokenizer))
    ids = torch.tensor([t for d, _ in docs for t in d], dtype=torch.int32)
    if ids.max() >= 2**16:
        raise ValueError(f"token id {int(ids.max())} does not fit in uint16")
    return {"ids": ids.to(torch.uint16), "lengths": torch.tensor([len(d) for d, _ in docs]),
            "cuts": torch.tensor([c for _, cuts in docs for c in cuts]), "cut_counts": torch.tensor([len(c) for _, c in docs])}


def heldout_windows(args) -> dict[str, dict[str, torch.Tensor]]:
    """Per category of a held-out build: its first ``--heldout-windows`` full windows, fixed blocks (as ``ood``)."""
    from datasets import load_from_disk

    from datamodules.text_blocks import window_blocks
    from lit_block.segmentation.document import encode, load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    rows = load_from_disk(args.heldout_dataset)["test"]
    out: dict[str, list[dict]] = {}
    for row in rows:
        kept = out.setdefault(row["category"], [])
        if len(kept) >= args.heldout_windows:
            continue
        windows = window_blocks(encode(tokenizer, row["text"])[0], args.ood_sample_tokens, args.ood_block_tokens,
                                args.global_tokens)
        full = [w for w in windows if len(w["input_ids"]) == args.ood_sample_tokens][:2]  # two per document: spread
        kept += full[: args.heldout_windows - len(kept)]
    return {category: stack(windows) for category, windows in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=".gpu/samples.pt")
    add_sample_arguments(p, max_documents=600)
    p.add_argument("--tokenizer", default="smollm2-135m", help="the teacher's tokenizer (a name or folder)")
    p.add_argument("--train", type=int, default=2000, help="training samples kept (after shuffling)")
    p.add_argument("--val", type=int, default=64, help="validation samples kept (in order)")
    p.add_argument("--ood-files", nargs="*", default=[], help="out-of-corpus text files")
    p.add_argument("--ood-sample-tokens", type=int, default=2048)
    p.add_argument("--ood-block-tokens", type=int, default=256)
    p.add_argument("--train-documents", action="store_true", help="also save the training split as documents")
    p.add_argument("--heldout-dataset", default=None, help="a held-out build (lit-block data build --heldout)")
    p.add_argument("--heldout-windows", type=int, default=24, help="windows kept per held-out family")
    p.add_argument("--rag-splits", nargs="*", default=["validation"], help="corpus splits for RAG samples ('' for none)")
    p.add_argument("--rag-per-task", type=int, default=40)
    p.add_argument("--rag-passages", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from datamodules.text_blocks import check_not_reserved, window_blocks
    from lit_block.segmentation.document import encode, load_tokenizer

    data = data_from_arguments(args, tokenizer=args.tokenizer)
    data.setup()
    order = torch.randperm(len(data.samples["train"]), generator=torch.Generator().manual_seed(args.seed))
    out = {"val": stack(data.samples["val"][: args.val])}
    if args.train:
        out["train"] = stack([data.samples["train"][i] for i in order[: args.train].tolist()])
    if args.ood_files:
        tokenizer = load_tokenizer(args.tokenizer)
        ood, digest = [], hashlib.sha256()
        for name in args.ood_files:
            check_not_reserved(Path(name))  # kept for independent checks
            text = Path(name).read_text(encoding="utf-8")
            digest.update(text.encode())
            ids = encode(tokenizer, text)[0]
            windows = window_blocks(ids, args.ood_sample_tokens, args.ood_block_tokens, args.global_tokens)
            ood += [w for w in windows if len(w["input_ids"]) == args.ood_sample_tokens]  # full windows only
        out["ood"] = stack(ood)
        out["ood_files_sha256"] = digest.hexdigest()
    if args.train_documents:
        out["train_documents"] = train_documents(data, args.dataset)
    if args.heldout_dataset:
        out["heldout"] = heldout_windows(args)
    splits = [x for x in args.rag_splits if x]
    if splits:
        from dataclasses import asdict

        from lit_block.rag import build_corpus_tasks

        rag = build_corpus_tasks(args.dataset, splits=tuple(splits), num_passages=args.rag_passages,
                                 max_samples_per_task=args.rag_per_task, seed=args.seed)
        out["rag"] = [asdict(r) for r in rag]
    out["meta"] = {k: v for k, v in vars(args).items() if k != "out"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{args.out}.tmp"
    torch.save(out, tmp)
    os.replace(tmp, args.out)  # atomic: a half-written file never looks finished
    counts = {k: tuple(v["input_ids"].shape) for k, v in out.items() if isinstance(v, dict) and "input_ids" in v}
    counts |= {f"heldout {k}": tuple(v["input_ids"].shape) for k, v in out.get("heldout", {}).items()}
    if "train_documents" in out:
        counts["train_documents"] = (len(out["train_documents"]["lengths"]), len(out["train_documents"]["ids"]))
    print(f"wrote {args.out}: {counts}")


if __name__ == "__main__":
    main()
