"""One block-distillation training step: throughput, MFU and peak memory, against a naive baseline.

    lit-block bench distill --model qwen3-0.6b --tokens 8192 32768 --backends sdpa flex varlen   # a GPU
    lit-block bench distill --model smollm2-135m --tokens 512 --device cpu --backends sdpa        # a smoke run

Teacher and student of the named shape (random weights); one sample of ``--tokens`` tokens cut into
``--block-tokens`` blocks and a ``--global-tokens`` global block. The timed step is the one
``BlockDistillationModule.training_step`` runs (``lit_block.distillation_step``, with the full method's
settings: 10% of blocks released, sensitivity weights, ``--isolated-weight``), under bf16 autocast, then
backward and an AdamW step. The naive baseline does the same work with stock transformers models: a dense
4D mask for block attention, the full ``[tokens, vocab]`` logits of the models and unchunked KLs. MFU
counts the FLOPs of the step's passes (``step_flops``; activation recomputation not counted) against
``--peak-tflops`` (989: the H100 SXM's and H200's dense bf16 rate).
"""

from __future__ import annotations

import functools
import statistics
import time

import torch
import torch.nn.functional as F

from lit_block.distillation_step import DistillSettings, SensitivityWeighting, distillation_step, sample_released
from lit_block.errors import UsageError


def step_flops(config, tokens: int, block_tokens: int, global_tokens: int, isolated_weight: float) -> float:
    """FLOPs of one ``ours_step``: the teacher's full and block forward passes, the sensitivity divergence's two
    vocabulary projections of every position, the loss's projections (teacher forward, student forward and
    backward) of the positions it scores, the student's block forward and backward. The loss scores every position
    when isolated rows have weight, else the global block and (in expectation) the released blocks. Not counted:
    sinks, recomputation (activation checkpointing, the loss's checkpointed chunks)."""
    from lit_block.benchmarks.attention import attention_work, block_sizes
    from lit_block.model import config_head_dim

    hidden, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    head_dim = config_head_dim(config)
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    per_token = layers * (2 * hidden * (heads + 2 * kv) * head_dim + 2 * heads * head_dim * hidden
                          + 3 * 2 * hidden * config.intermediate_size)  # the decoder layers' matmuls, forward
    head = 2 * hidden * vocab  # one position's vocabulary projection, forward
    full_pairs, block_pairs = attention_work(block_sizes(tokens, block_tokens, global_tokens), global_tokens)
    attn = lambda pairs: 4 * layers * heads * head_dim * pairs  # noqa: E731 - QK^T and PV, forward
    scored = tokens if isolated_weight > 0 else global_tokens + RELEASE_PROBABILITY * (tokens - global_tokens)
    teacher = 2 * per_token * tokens + attn(full_pairs) + attn(block_pairs) + 2 * head * tokens
    loss = head * scored + 3 * head * scored  # the teacher's projection, the student's forward + backward
    student = 3 * (per_token * tokens + attn(block_pairs))  # forward + backward (2x)
    return teacher + loss + student


def make_models(shape: str, device: str, sinks: int, backend: str, compile: bool = False):
    from lit_block.benchmarks.ttft import random_model

    torch.manual_seed(0)
    teacher = random_model(shape, device, torch.bfloat16, 0)
    teacher.attn_backend = backend
    teacher.requires_grad_(False)
    student = random_model(shape, device, torch.float32, sinks)  # fp32 master weights, bf16 autocast
    student.attn_backend = backend
    student.model.load_state_dict(teacher.model.state_dict())  # the student starts as the teacher
    if compile:
        teacher.compile_decoder_layers()
        student.compile_decoder_layers()
    return teacher, student.train()


def batch_for(tokens: int, block_tokens: int, global_tokens: int, vocab: int, device: str) -> dict:
    from lit_block.benchmarks.attention import block_id_row, block_sizes

    block_ids = block_id_row(block_sizes(tokens, block_tokens, global_tokens), global_tokens)
    ids = torch.randint(0, vocab, (1, tokens))
    mask = torch.ones(1, tokens, dtype=torch.long)
    return {k: v.to(device) for k, v in dict(input_ids=ids, block_ids=block_ids[None], attention_mask=mask).items()}


# The full method as experiments/distill/full.yaml configures it (tests/test_distillation_step.py checks they agree)
RELEASE_PROBABILITY = 0.1  # block dropout's release probability, mid-schedule (0 -> 0.3)
SENSITIVITY = SensitivityWeighting(temperature=1.0, min_weight=0.1, max_weight=10.0)


def ours_loss(teacher, student, batch, settings: DistillSettings, tick=lambda phase: None):
    """The framework's step up to its loss: ``lit_block.distillation_step.distillation_step``, the one
    ``BlockDistillationModule.training_step`` runs, with the full method's release probability and weighting."""
    released = sample_released(batch["block_ids"], RELEASE_PROBABILITY)
    return distillation_step(teacher, student, batch, released, settings, SENSITIVITY, tick)


def ours_step(teacher, student, batch, optimizer, checkpointing: float, tick=lambda phase: None, settings=None):
    """One training step: the loss under bf16 autocast (as Lightning's ``bf16-mixed``), backward, AdamW.
    ``tick(phase)`` is called after each phase (``--breakdown`` times them)."""
    with torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16):
        loss = ours_loss(teacher, student, batch, settings or DistillSettings(), tick)
    loss.backward()
    tick("backward")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    tick("optimizer step")


def prepare_student(student, checkpointing: float, device: str) -> torch.optim.Optimizer:
    """Set the student's activation checkpointing (the share of its decoder layers that recompute) and return a fresh
    optimizer for it."""
    from lit_block.sharding import set_activation_checkpointing

    set_activation_checkpointing(student.model, checkpointing)
    return torch.optim.AdamW(student.parameters(), lr=1e-5, fused=device == "cuda")


def breakdown(teacher, student, batch, checkpointing: float, device: str, repeat: int, settings=None,
              warmup: int = 1) -> dict[str, float]:
    """Median milliseconds of each phase of ``ours_step`` (a device sync between phases), after ``warmup`` steps."""
    from lit_block.benchmarks.attention import sync

    optimizer = prepare_student(student, checkpointing, device)
    samples: dict[str, list[float]] = {}
    for i in range(warmup + repeat):
        sync(device)
        last = [time.perf_counter()]

        def tick(phase):
            sync(device)
            now = time.perf_counter()
            if i >= warmup:
                samples.setdefault(phase, []).append(1e3 * (now - last[0]))
            last[0] = now

        ours_step(teacher, student, batch, optimizer, checkpointing, tick, settings)
    del optimizer
    return {phase: statistics.median(ms) for phase, ms in samples.items()}


def profile(teacher, student, batch, checkpointing: float, device: str, settings=None, top: int = 15) -> str:
    """One profiled ``ours_step`` (after a warm-up step): GPU kernel time against wall time, then the top kernels."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from lit_block.benchmarks.attention import sync

    optimizer = prepare_student(student, checkpointing, device)
    ours_step(teacher, student, batch, optimizer, checkpointing, settings=settings)
    sync(device)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        ours_step(teacher, student, batch, optimizer, checkpointing, settings=settings)
        sync(device)
        wall = 1e3 * (time.perf_counter() - start)
    del optimizer
    events = prof.key_averages()
    kernels = sum(e.device_time_total for e in prof.events() if e.device_type == DeviceType.CUDA) / 1e3  # us -> ms
    return (f"kernels {kernels:.1f} ms of a {wall:.1f} ms step (profiled; GPU idle {100 * (1 - kernels / wall):.0f}%)\n"
            + events.table(sort_by="self_device_time_total", row_limit=top, max_name_column_width=70))


def naive_step(teacher, student, batch, optimizer, checkpointing: float):
    """Stock transformers: a dense 4D block mask, full logits of both models, unchunked KL."""
    from lit_block.layout import layout_from_tokens

    layout = layout_from_tokens(batch["input_ids"], batch["block_ids"])
    with torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16):
        with torch.no_grad():
            t_logits = teacher.model(input_ids=batch["input_ids"], use_cache=False).logits.float()
            t_block = teacher.model(input_ids=batch["input_ids"], attention_mask=layout.dense_mask(),
                                    use_cache=False).logits.float()  # sensitivity pass
            t_logp = t_logits.log_softmax(-1)
            weights = (t_logp.exp() * (t_logp - t_block.log_softmax(-1))).sum(-1)  # [1, T] KL(full || block)
            del t_block
        s_logits = student.model(input_ids=batch["input_ids"], attention_mask=layout.dense_mask(),
                                 use_cache=False).logits.float()
        kl = F.kl_div(s_logits.log_softmax(-1), t_logp, log_target=True, reduction="none").sum(-1)
        kl = (kl * weights / weights.mean()).mean()
    kl.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(step, teacher, student, batch, checkpointing: float, repeat: int, device: str, warmup: int = 1) -> dict:
    from lit_block.benchmarks.attention import sync

    optimizer = prepare_student(student, checkpointing, device)
    try:
        for _ in range(warmup):  # compilation, the allocator, cuDNN's plans
            step(teacher, student, batch, optimizer, checkpointing)
        sync(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            step(teacher, student, batch, optimizer, checkpointing)
            sync(device)
            times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError:
        return {"ms": float("nan"), "peak_gib": float("nan"), "oom": True}
    finally:
        del optimizer
        if device == "cuda":
            torch.cuda.empty_cache()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return {"ms": 1e3 * statistics.median(times), "peak_gib": peak, "oom": False}


def checkpointing_modes(value: str) -> list[float]:
    """``--checkpointing``: on, off, both, or a share of the student's decoder layers in [0, 1]."""
    named = {"on": [1.0], "off": [0.0], "both": [0.0, 1.0]}
    if value in named:
        return named[value]
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not 0 <= share <= 1:
        raise UsageError(f"--checkpointing {value!r}: expected on, off, both or a share of decoder layers in [0, 1]")
    return [share]


def checkpointing_label(share: float) -> str:
    return {0.0: "off", 1.0: "on"}.get(share, f"{share:.0%} of layers")


def build_parser():
    from lit_block.command_line import command_parser

    p = command_parser("lit-block bench distill", __doc__)
    p.add_argument("--model", default="qwen3-0.6b", help="a shape of lit_block.benchmarks.ttft.SHAPES or a config folder")
    p.add_argument("--tokens", type=int, nargs="+", default=[8192, 32768], help="tokens per step")
    p.add_argument("--block-tokens", type=int, default=512, help="tokens per context block")
    p.add_argument("--global-tokens", type=int, default=512, help="tokens of the global block")
    p.add_argument("--sinks", type=int, default=2, help="sink tokens per block")
    p.add_argument("--isolated-weight", type=float, default=0.0,
                   help="the loss's weight on isolated-block rows (experiments/distill/full.yaml's isolated_weight)")
    p.add_argument("--chunk-size", type=int, default=2048, help="positions per vocabulary projection in the loss")
    p.add_argument("--backends", nargs="+", default=["sdpa", "flex", "varlen"], help="student attention backends timed")
    p.add_argument("--checkpointing", default="both",
                   help="student activation checkpointing: on, off, both, or the share of decoder layers that recompute "
                        "(e.g. 0.5: every other layer; the memory the rest keep buys back their recomputation)")
    p.add_argument("--naive", type=bool, default=True, help="run the naive baseline")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where it runs")
    p.add_argument("--repeat", type=int, default=3, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1,
                   help="steps before timing; auto's cudnn plans for block dropout's released blocks need tens at 32k")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU, for MFU")
    p.add_argument("--breakdown", action="store_true", help="also time each phase of the lit-block step")
    p.add_argument("--profile", action="store_true", help="also profile one lit-block step: kernel time and top kernels")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile every decoder layer of both models and the loss's per-chunk softmaxes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    modes = checkpointing_modes(args.checkpointing)
    compiled = "inductor" if args.compile else None  # the layers (make_models) and the loss (ours_step)
    settings = DistillSettings(isolated_weight=args.isolated_weight, chunk_size=args.chunk_size, compile=compiled)
    rows = []
    for backend in args.backends:
        teacher, student = make_models(args.model, args.device, args.sinks, backend, args.compile)
        for tokens in args.tokens:
            batch = batch_for(tokens, args.block_tokens, args.global_tokens, teacher.config.vocab_size, args.device)
            flops = step_flops(teacher.config, tokens, args.block_tokens, args.global_tokens, args.isolated_weight)
            variants = [(f"lit-block, {backend}" + (", compiled" if args.compile else ""),
                         functools.partial(ours_step, settings=settings))]
            if args.naive and backend == args.backends[0]:
                variants.insert(0, ("naive (HF, dense mask, full logits)" + (", compiled layers" if args.compile else ""),
                                    naive_step))
            for name, step in variants:
                for ckpt in modes:
                    r = measure(step, teacher, student, batch, ckpt, args.repeat, args.device, args.warmup)
                    rows.append(dict(tokens=tokens, name=name, ckpt=ckpt, flops=flops, **r))
                    print(f"{tokens} {name} ckpt={ckpt}: {r}", flush=True)
            if args.breakdown:
                for ckpt in modes:
                    phases = breakdown(teacher, student, batch, ckpt, args.device, args.repeat, settings, args.warmup)
                    print(f"\n{tokens} tokens, {backend}, checkpointing {checkpointing_label(ckpt)}: phases: "
                          + "; ".join(f"{k} {v:.1f} ms" for k, v in phases.items()), flush=True)
            if args.profile and args.device == "cuda":
                for ckpt in modes:
                    print(f"\n{tokens} tokens, {backend}, checkpointing {checkpointing_label(ckpt)}, profiled: "
                          + profile(teacher, student, batch, ckpt, args.device, settings), flush=True)
        del teacher, student
    print(f"\n{args.model} teacher + student (random weights), {args.device}, torch {torch.__version__}; blocks of "
          f"{args.block_tokens}, global block {args.global_tokens}, {args.sinks} sinks; median of {args.repeat} steps "
          f"after {args.warmup}; MFU against {args.peak_tflops:.0f} TFLOP/s\n")
    print("| tokens | step | activation checkpointing | step ms | tokens/s | MFU | peak GiB | speed-up vs naive |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next((b for b in rows if b["tokens"] == r["tokens"] and b["name"].startswith("naive") and
                     b["ckpt"] == r["ckpt"] and not b["oom"]), None)
        if r["oom"]:
            print(f"| {r['tokens']} | {r['name']} | {checkpointing_label(r['ckpt'])} | out of memory | - | - | - | - |")
            continue
        mfu = r["flops"] / (r["ms"] / 1e3) / (args.peak_tflops * 1e12)
        speed = f"{base['ms'] / r['ms']:.2f}x" if base else "-"
        print(f"| {r['tokens']} | {r['name']} | {checkpointing_label(r['ckpt'])} | {r['ms']:.0f} | "
              f"{r['tokens'] / (r['ms'] / 1e3):,.0f} | {100 * mfu:.1f}% | {r['peak_gib']:.1f} | {speed} |")
    return 0
