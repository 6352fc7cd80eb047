"""A BERT encoder's first layers over packed units, without transformers: the segmenter's frozen encoder.

``BertModel``'s computation (absolute positions, token type 0, post-norm layers, exact GELU) on units
laid end to end with no padding, each attending to its own tokens only. Measured against transformers'
``BertModel`` on the segment path (``lit-block bench segment``): the import alone costs about 1.9 s of
start-up on 2 CPU cores, and padded batches about 0.4 s more encoder time for a 32k-token document.
Folders it cannot read exactly (another architecture, dtype or naming) return None and go through
transformers instead.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn


def plain_tokenizer(path: str):
    """``(tokenizers.Tokenizer, (first id, last id))`` from ``path/tokenizer.json`` when it wraps one sequence in
    exactly two special tokens (BERT's ``[CLS] ... [SEP]``, all token type 0), else ``(None, None)``."""
    from pathlib import Path

    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        return None, None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    probe = "A probe, two words."
    plain, full = tokenizer.encode(probe, add_special_tokens=False), tokenizer.encode(probe)
    if len(full.ids) != len(plain.ids) + 2 or full.ids[1:-1] != plain.ids or any(full.type_ids):
        return None, None
    if tokenizer.encode("", add_special_tokens=True).ids != [full.ids[0], full.ids[-1]]:
        return None, None
    return tokenizer, (full.ids[0], full.ids[-1])


class PackedBert(nn.Module):
    """The first layers of a BERT encoder (``BertModel``'s computation: absolute positions, token type 0,
    post-norm layers, exact GELU) over packed sequences: ``[T]`` token ids of units laid end to end, each
    unit's positions counting from 0, and ``groups`` ``[(count, length)]`` of consecutive equal-length units.
    """

    def __init__(self, config: dict, layers: int):
        super().__init__()
        hidden, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        self.hidden = hidden
        # given tables: nn.Embedding's random init is skipped (and on the meta device it would import torch._refs)
        self.word_embeddings = nn.Embedding(config["vocab_size"], hidden, _weight=torch.empty(config["vocab_size"], hidden))
        self.position_embeddings = nn.Embedding(config["max_position_embeddings"], hidden,
                                                _weight=torch.empty(config["max_position_embeddings"], hidden))
        self.token_type = nn.Parameter(torch.zeros(hidden))  # token type 0's embedding: one sequence per unit
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(_PackedBertLayer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
                                    for _ in range(layers))

    @classmethod
    def load(cls, path: str, layers: int) -> PackedBert | None:
        """From a folder's ``config.json`` and ``model.safetensors`` (only the tensors of the layers kept);
        None when the folder holds something else (another architecture, other dtypes, other names)."""
        import json
        from pathlib import Path

        config_file, weights = Path(path) / "config.json", Path(path) / "model.safetensors"
        if not config_file.is_file() or not weights.is_file():
            return None
        config = json.loads(config_file.read_text())
        plain = (config.get("model_type") == "bert" and config.get("hidden_act") == "gelu"
                 and config.get("position_embedding_type", "absolute") == "absolute" and not config.get("is_decoder")
                 and config.get("hidden_size", 0) % max(config.get("num_attention_heads", 0), 1) == 0)
        if not plain:
            return None
        from safetensors import safe_open

        with torch.device("meta"):  # no memory or random initialisation for weights that are loaded next
            net = cls(config, min(layers, config["num_hidden_layers"]))
        state = {}
        with safe_open(str(weights), framework="pt") as f:
            names = set(f.keys())
            prefix = next((p for p in ("", "bert.") if f"{p}embeddings.word_embeddings.weight" in names), None)
            if prefix is None:
                return None

            def get(name: str) -> torch.Tensor | None:
                return f.get_tensor(prefix + name) if prefix + name in names else None

            e = "embeddings."
            state["word_embeddings.weight"] = get(e + "word_embeddings.weight")
            state["position_embeddings.weight"] = get(e + "position_embeddings.weight")
            types = get(e + "token_type_embeddings.weight")
            state["token_type"] = None if types is None else types[0]
            state["norm.weight"], state["norm.bias"] = get(e + "LayerNorm.weight"), get(e + "LayerNorm.bias")
            for i in range(len(net.layers)):
                p, q = f"encoder.layer.{i}.", f"layers.{i}."
                parts = [get(f"{p}attention.self.{n}.{w}") for w in ("weight", "bias") for n in ("query", "key", "value")]
                if any(t is None for t in parts):
                    return None
                state[q + "qkv.weight"], state[q + "qkv.bias"] = torch.cat(parts[:3]), torch.cat(parts[3:])
                for mine, theirs in (("attention_out", "attention.output.dense"), ("attention_norm", "attention.output.LayerNorm"),
                                     ("intermediate", "intermediate.dense"), ("output", "output.dense"),
                                     ("output_norm", "output.LayerNorm")):
                    for w in ("weight", "bias"):
                        state[f"{q}{mine}.{w}"] = get(f"{p}{theirs}.{w}")
        if any(t is None or t.dtype != torch.float32 for t in state.values()):
            return None  # missing tensors or another dtype: transformers loads it as it knows how
        try:
            net.load_state_dict(state, assign=True)  # the file's tensors themselves (memory-mapped), no copies
        except RuntimeError:  # shapes that do not match the config
            return None
        return net

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, groups: list[list[int]],
                workspace: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``[T, hidden]`` last hidden states of the packed tokens. ``workspace``: buffers kept across calls (chunks
        of one document), so that the large activations are written into memory already mapped."""
        workspace = {} if workspace is None else workspace
        x = self.word_embeddings(ids) + self.token_type  # the order BertEmbeddings adds them in
        x = self.norm(x + self.position_embeddings(positions))
        for layer in self.layers:
            x = layer(x, groups, workspace)
        return x


def _buffer(workspace: dict[str, torch.Tensor], name: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    """``[rows, cols]`` of the workspace's buffer ``name`` (grown when too small); its contents are garbage."""
    buffer = workspace.get(name)
    if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != cols:
        buffer = workspace[name] = like.new_empty(max(rows, 0 if buffer is None else buffer.shape[0]), cols)
    return buffer[:rows]


class _PackedBertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.scaling = self.head_dim**-0.5
        self.qkv = nn.Linear(hidden, 3 * hidden)  # query, key and value in one product
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)

    @staticmethod
    def _linear(layer: nn.Linear, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``layer(x)`` (the same addmm as nn.Linear's) written into ``out``."""
        return torch.addmm(layer.bias, x, layer.weight.t(), out=out)

    def forward(self, x: torch.Tensor, groups: list[list[int]], workspace: dict[str, torch.Tensor]) -> torch.Tensor:
        rows, hidden = x.shape
        qkv = self._linear(self.qkv, x, _buffer(workspace, "qkv", rows, 3 * hidden, x))
        context, start = _buffer(workspace, "context", rows, hidden, x), 0
        for count, length in groups:  # each unit attends to its own tokens only
            end = start + count * length
            q, k, v = qkv[start:end].view(count, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            attended = nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scaling)
            context[start:end].view(count, length, self.heads, self.head_dim).copy_(attended.transpose(1, 2))
            start = end
        summed = self._linear(self.attention_out, context, _buffer(workspace, "sum", rows, hidden, x)).add_(x)
        x = self.attention_norm(summed)
        inner = self._linear(self.intermediate, x, _buffer(workspace, "intermediate", rows, self.intermediate.out_features, x))
        torch.ops.aten.gelu_(inner)  # exact (erf) GELU, in place
        return self.output_norm(self._linear(self.output, inner, _buffer(workspace, "sum", rows, hidden, x)).add_(x))


def encoder_dtype_of(name: str, device: str | torch.device = "cpu") -> torch.dtype:
    """The frozen encoder's dtype. ``auto``: bfloat16 on a CPU with bfloat16 matrix instructions (Linux's cpuinfo
    flags ``amx_bf16``: Intel's AMX tiles, or ``avx512_bf16``: AMD Zen 4 and later, Intel Cooper Lake), where the
    2-layer MiniLM encoder scores about 1.6-1.7x faster and the segmenter cuts the same blocks (measured on both:
    docs/segmenter_generalisation.md); float32 anywhere else, where bfloat16 products are emulated and slower."""
    from lit_block.segmentation.segmenter import check_encoder_dtype

    if check_encoder_dtype(name) == "auto":
        return torch.bfloat16 if torch.device(device).type == "cpu" and cpu_has_bf16_matmul() else torch.float32
    return getattr(torch, name)


@functools.cache
def cpu_has_bf16_matmul() -> bool:
    try:
        return has_bf16_matmul_flag(Path("/proc/cpuinfo").read_text())
    except OSError:  # not Linux: no cheap way to ask, so float32
        return False


def has_bf16_matmul_flag(cpuinfo: str) -> bool:
    """Whether Linux's ``/proc/cpuinfo`` text lists a bfloat16 matrix instruction set (AMX or AVX-512 bf16)."""
    return not {"amx_bf16", "avx512_bf16"}.isdisjoint(cpuinfo.split())
