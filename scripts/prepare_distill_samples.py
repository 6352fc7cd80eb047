"""Prepare the samples that ``scripts/distill_gpu_run.py`` trains and scores on a GPU machine.

The lent GPU image has no ``datasets`` and no corpus, so the samples are built here with the same
code the YAML experiments use (``DistillDataModule``) and saved as plain tensors:

    python scripts/prepare_distill_samples.py --dataset data/semanticseg --out .gpu/samples.pt

* ``train`` / ``val``: ``DistillDataModule`` samples (corpus splits, so validation documents are
  held out), ``--sample-tokens`` long, context cut by ``--method`` at ``--granularity``, the last
  ``--global-tokens`` of each window as the global block; train samples shuffled with ``--seed``.
* ``ood``: text the corpus does not contain (``--ood-files``), cut into fixed blocks the way
  ``TextBlocksDataModule`` does, for the out-of-corpus check.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=".gpu/samples.pt")
    add_sample_arguments(p, max_documents=600)
    p.add_argument("--train", type=int, default=2000, help="training samples kept (after shuffling)")
    p.add_argument("--val", type=int, default=64, help="validation samples kept (in order)")
    p.add_argument("--ood-files", nargs="*", default=[], help="out-of-corpus text files")
    p.add_argument("--ood-sample-tokens", type=int, default=2048)
    p.add_argument("--ood-block-tokens", type=int, default=256)
    p.add_argument("--rag-splits", nargs="*", default=["validation"], help="corpus splits for RAG samples ('' for none)")
    p.add_argument("--rag-per-task", type=int, default=40)
    p.add_argument("--rag-passages", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from datamodules.text_blocks import check_not_reserved, window_blocks
    from lit_block.segmentation.document import encode, load_tokenizer

    data = data_from_arguments(args)
    data.setup()
    order = torch.randperm(len(data.samples["train"]), generator=torch.Generator().manual_seed(args.seed))
    out = {"train": stack([data.samples["train"][i] for i in order[: args.train].tolist()]),
           "val": stack(data.samples["val"][: args.val])}
    if args.ood_files:
        tokenizer = load_tokenizer("smollm2-135m")
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
    print(f"wrote {args.out}: {counts}")


if __name__ == "__main__":
    main()
