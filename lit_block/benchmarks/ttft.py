"""Time to first token: full prefill against block-cached prefill of only the global block.

    lit-block bench ttft --model llama-3.1-8b --tokens 4096 8192 16384 32768 --device cuda   # random weights
    lit-block bench ttft --model smollm2-135m --tokens 1024 2048 4096 --device cpu

For each total length, the context (length minus ``--query-tokens``) is cut into blocks of
``--block-tokens`` and answered three ways with ``lit_block.serving.generate`` (one new token):

* full: the whole prompt prefilled with causal attention (the baseline);
* cold: block path with an empty store (every block prefilled alone, in batches, then the query);
* warm: block path with every block already in the store: cache lookup, key re-rotation and
  assembly, then the query's prefill -- what a reused context costs. On CUDA the query prefill is
  replayed from a CUDA graph (``QueryPrefill``); "warm, eager" is the same without graphs.

Times are medians of ``--repeat`` runs, synchronized; the ratio columns are against "full" of the same run.
"""

from __future__ import annotations

import statistics

import torch

# shapes for random-weight timing (no download): the published configs' sizes
SHAPES = {
    "llama-3.1-8b": dict(family="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "qwen3-0.6b": dict(family="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True),
    "qwen3-4b": dict(family="qwen3", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True),
    "smollm2-135m": dict(family="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                         rope_parameters={"rope_type": "default", "rope_theta": 100000.0}, tie_word_embeddings=True),
}


def shape_config(name: str):
    """A transformers config for a named shape, or the config of a local folder / hub id."""
    from transformers import AutoConfig, LlamaConfig, Qwen3Config

    if name not in SHAPES:
        return AutoConfig.from_pretrained(name)
    spec = dict(SHAPES[name])
    family = spec.pop("family")
    return {"llama": LlamaConfig, "qwen3": Qwen3Config}[family](**spec)


def random_model(name: str, device: str, dtype: torch.dtype, num_sinks: int):
    from transformers import AutoModelForCausalLM

    from lit_block.model import BlockAttentionLM

    config = shape_config(name)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return BlockAttentionLM(model, num_sink_tokens=num_sinks).eval()


def measure(lm, length: int, args) -> dict:
    from lit_block.serving import BlockKVStore, GenerationConfig, generate
    from lit_block.serving.query_prefill import QueryPrefill

    g = torch.Generator().manual_seed(length)
    vocab = lm.config.vocab_size
    context = length - args.query_tokens
    blocks = [torch.randint(0, vocab, (min(args.block_tokens, context - s),), generator=g).tolist()
              for s in range(0, context, args.block_tokens)]
    query = torch.randint(0, vocab, (args.query_tokens,), generator=g).tolist()
    one = GenerationConfig(max_new_tokens=1, stop_at_eos=False)
    store = BlockKVStore(max_bytes=args.store_gib << 30)

    def median(fn) -> float:
        fn()  # warm-up (kernels, allocator)
        return statistics.median(fn() for _ in range(args.repeat)) * 1e3

    full = median(lambda: generate(lm, blocks, query, one, full_attention=True).ttft_s)
    cold = median(lambda: generate(lm, blocks, query, one, store=BlockKVStore(max_bytes=args.store_gib << 30)).ttft_s)
    generate(lm, blocks, query, one, store=store)  # fill the store
    warm = median(lambda: generate(lm, blocks, query, one, store=store).ttft_s)
    runner = QueryPrefill.of(lm)
    graphs, runner.use_graphs = runner.use_graphs, False
    eager = median(lambda: generate(lm, blocks, query, one, store=store).ttft_s)
    runner.use_graphs = graphs
    return dict(length=length, blocks=len(blocks), full=full, cold=cold, warm=warm, eager=eager, graphs=graphs,
                store_mib=store.bytes / 2**20)


def build_parser():
    from lit_block.command_line import command_parser

    p = command_parser("lit-block bench ttft", __doc__)
    p.add_argument("--model", default="smollm2-135m", help=f"a shape ({', '.join(SHAPES)}) or a config folder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where it runs")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--tokens", type=int, nargs="+", default=None,
                   help="total prompt tokens (null: 4k-32k on cuda, 1k-4k on cpu)")
    p.add_argument("--block-tokens", type=int, default=512, help="tokens per context block")
    p.add_argument("--query-tokens", type=int, default=128, help="tokens of the query (global block)")
    p.add_argument("--sinks", type=int, default=0, help="sink tokens per block")
    p.add_argument("--repeat", type=int, default=3, help="timed runs (median reported)")
    p.add_argument("--store-gib", type=int, default=16, help="byte budget of the block KV store (GiB)")
    p.add_argument("--experiment", default="", help="MLflow experiment to log the table to ('' to skip)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cuda = args.device == "cuda"
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    lengths = args.tokens or ([4096, 8192, 16384, 32768] if cuda else [1024, 2048, 4096])
    torch.manual_seed(0)
    lm = random_model(args.model, args.device, dtype, args.sinks)
    rows = []
    for length in lengths:
        rows.append(measure(lm, length, args))
        r = rows[-1]
        print(f"{length}: full {r['full']:.1f} ms, cold {r['cold']:.1f} ms, warm {r['warm']:.1f} ms "
              f"(graphs {'on' if r['graphs'] else 'off'}), warm eager {r['eager']:.1f} ms", flush=True)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"\n{args.model} (random weights, {str(dtype)[6:]}) on {name}, torch {torch.__version__}; blocks of "
          f"{args.block_tokens} tokens, query {args.query_tokens} tokens, {args.sinks} sinks; median of {args.repeat}\n")
    print("| prompt tokens | blocks | full prefill ms | cached, cold ms | cached, warm ms | warm, eager ms | warm / full | "
          "warm eager / full | cold / full | store MiB |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['length']} | {r['blocks']} | {r['full']:.1f} | {r['cold']:.1f} | {r['warm']:.2f} | {r['eager']:.2f} | "
              f"{100 * r['warm'] / r['full']:.2f}% | {100 * r['eager'] / r['full']:.2f}% | {100 * r['cold'] / r['full']:.0f}% | "
              f"{r['store_mib']:.0f} |")
    if args.experiment:
        log_to_mlflow(args, rows, name)
    return 0


def log_to_mlflow(args, rows: list[dict], device_name: str) -> None:
    """One run: the settings as params, each length's times and ratios as metrics (``ttft.<length>.<what>``)."""
    import mlflow

    from lit_block.tracking import start_mlflow_run

    with start_mlflow_run(args.experiment, f"bench-ttft-{args.model}"):
        mlflow.log_params({"model": args.model, "device": device_name, "block_tokens": args.block_tokens,
                           "query_tokens": args.query_tokens, "sinks": args.sinks, "repeat": args.repeat})
        for r in rows:
            n = r["length"]
            mlflow.log_metrics({f"ttft.{n}.full_ms": r["full"], f"ttft.{n}.cold_ms": r["cold"], f"ttft.{n}.warm_ms": r["warm"],
                                f"ttft.{n}.warm_eager_ms": r["eager"],
                                f"ttft.{n}.warm_over_full": r["warm"] / r["full"], f"ttft.{n}.store_mib": r["store_mib"]})
