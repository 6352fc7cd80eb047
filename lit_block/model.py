"""``BlockAttentionLM``: any Hugging Face RoPE causal LM, run under block attention.

    model = BlockAttentionLM.from_pretrained("smollm2-135m", num_sink_tokens=2)
    out = model(input_ids, block_ids)          # sinks inserted per block, logits aligned with input_ids
    out = model(input_ids, full_attention=True)  # the same weights with plain causal attention

The wrapper owns the learned sink embeddings (``k`` vectors shared by all blocks) and installs
block attention through transformers' attention interface (see ``attention/transformers_hook.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from lit_block.attention import prepare_block_attention
from lit_block.attention.transformers_hook import ATTN_IMPLEMENTATION, register_block_attention
from lit_block.layout import BlockLayout, layout_from_tokens, place_sinks
from lit_block.model_sources import not_found, resolve_model_path

SINKS_FILE = "lit_block_sinks.safetensors"  # written next to the HF weights by save_pretrained
CONFIG_FILE = "lit_block.json"


def _has_rotary_embedding(model: PreTrainedModel) -> bool:
    return any("rotary" in type(m).__name__.lower() for m in model.modules())


def config_head_dim(config: PretrainedConfig) -> int | None:
    """Attention head size of a transformers config (``head_dim``, else hidden size / heads; None if it says neither)."""
    heads = getattr(config, "num_attention_heads", None)
    return getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)


def compile_backend(flag: bool | str) -> str | None:
    """A module's ``compile_layers`` setting as a ``torch.compile`` backend: ``True`` -> inductor, off -> ``None``."""
    return flag if isinstance(flag, str) else ("inductor" if flag else None)


class BlockAttentionLM(nn.Module):
    """A causal LM with block attention and ``num_sink_tokens`` learned sinks per context block."""

    def __init__(
        self,
        model: PreTrainedModel,
        num_sink_tokens: int = 0,
        attn_backend: str = "sdpa",
        tokenizer=None,
    ):
        super().__init__()
        if num_sink_tokens < 0:
            raise ValueError(f"num_sink_tokens must be >= 0, got {num_sink_tokens}")
        if not _has_rotary_embedding(model):
            raise ValueError(
                f"{type(model).__name__} has no rotary position embedding; block attention's exact KV reuse needs RoPE"
            )
        model.set_attn_implementation(register_block_attention())
        self.model = model
        self.tokenizer = tokenizer
        self.attn_backend = attn_backend
        self.num_sink_tokens = num_sink_tokens
        embed = model.get_input_embeddings().weight
        self.sink_embeddings = nn.Parameter(self._initial_sinks(embed, num_sink_tokens))

    def _initial_sinks(self, embed: torch.Tensor, k: int) -> torch.Tensor:
        """Start every sink as the BOS embedding (the sink the model already knows), else the mean."""
        bos = self.model.config.bos_token_id
        row = embed[bos] if isinstance(bos, int) and 0 <= bos < embed.shape[0] else embed.mean(dim=0)
        return row.detach().clone().expand(k, -1).clone()

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | PretrainedConfig,
        num_sink_tokens: int | None = None,
        attn_backend: str = "sdpa",
        dtype: torch.dtype | str | None = None,
        **hf_kwargs,
    ) -> BlockAttentionLM:
        """Load by embedded short name, local folder, hub id, or build from a config (random weights).

        A folder written by :meth:`save_pretrained` restores its sink embeddings; ``num_sink_tokens``
        then defaults to the saved count.
        """
        if isinstance(name_or_path, PretrainedConfig):
            model = AutoModelForCausalLM.from_config(name_or_path, dtype=dtype)
            return cls(model, num_sink_tokens or 0, attn_backend)
        path = resolve_model_path(str(name_or_path))
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype if dtype is not None else "auto", **hf_kwargs)
        except OSError as err:  # transformers' "couldn't connect to the hub" for a name that is nothing local
            if Path(path).exists():
                raise
            raise not_found(str(name_or_path), err) from err
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError):  # a weights-only folder
            tokenizer = None
        saved = Path(path) / CONFIG_FILE
        saved_sinks = json.loads(saved.read_text())["num_sink_tokens"] if saved.is_file() else 0
        k = saved_sinks if num_sink_tokens is None else num_sink_tokens
        lm = cls(model, k, attn_backend, tokenizer)
        if saved_sinks and k == saved_sinks:
            from safetensors.torch import load_file

            sinks = load_file(str(Path(path) / SINKS_FILE))["sink_embeddings"]
            lm.sink_embeddings.data.copy_(sinks.to(lm.sink_embeddings.dtype))
        elif saved_sinks and k != saved_sinks:
            raise ValueError(f"{path} was saved with {saved_sinks} sink tokens, asked for {num_sink_tokens}")
        return lm

    def save_pretrained(self, folder: str | Path) -> None:
        """Write HF weights, tokenizer, sink embeddings and the block settings to ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        self.model.save_pretrained(folder)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        save_file({"sink_embeddings": self.sink_embeddings.detach().cpu().contiguous()}, str(folder / SINKS_FILE))
        settings = {"num_sink_tokens": self.num_sink_tokens, "attn_backend": self.attn_backend}
        (folder / CONFIG_FILE).write_text(json.dumps(settings, indent=2))

    def compile_decoder_layers(self, backend: str = "inductor") -> None:
        """``torch.compile`` every decoder layer in place (parameter names unchanged, so checkpoints and
        ``save_pretrained`` are unaffected); identical layers share the compiled code. Fuses each layer's pointwise
        work (norms, RoPE, activations, casts): 1.6x a distillation step on an H200 (docs/distillation_notes.md).
        ``backend``: any ``torch.compile`` backend (``aot_eager`` traces without generating kernels, for debugging).

        Shapes are automatically dynamic: the first length compiles a static graph, the first change of length
        one dynamic graph that serves every later length (batches padded to their longest sample vary in length)."""
        from lit_block.sharding import decoder_layers

        for layer in decoder_layers(self.model):
            layer.compile(backend=backend)
        # all layers share one code object whose graphs multiply with the pass (teacher or student, grad or not,
        # attention backend, static or dynamic length); at dynamo's default limit of 8 the rest would run eager
        config = torch._dynamo.config
        limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
        setattr(config, limit, max(getattr(config, limit), 64))

    # ------------------------------------------------------------------ forward passes

    def layout(
        self,
        input_ids: torch.Tensor,
        block_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        released: torch.Tensor | None = None,
    ) -> BlockLayout:
        """The packed layout this model runs for caller tokens (its sinks inserted)."""
        return layout_from_tokens(
            input_ids, block_ids, attention_mask, num_sinks=self.num_sink_tokens, released=released
        )

    # The public methods below that read parameters are FSDP2 entry points (``lit_block.sharding``
    # registers them); they call private bodies, so no entry point runs inside another.

    def hidden_states_for_layout(self, layout: BlockLayout) -> torch.Tensor:
        """Final hidden states ``[B, T, hidden]`` at every packed position (sinks included)."""
        return self._block_hidden(layout)

    def full_attention_hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Final hidden states ``[B, S, hidden]`` of the same weights with plain causal attention (no sinks)."""
        return self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state

    def _block_hidden(self, layout: BlockLayout) -> torch.Tensor:
        if self.model.config._attn_implementation != ATTN_IMPLEMENTATION:
            # e.g. another from_config(...) on this config object: block attention would silently be off
            raise RuntimeError(
                f"the model's attention implementation was switched to {self.model.config._attn_implementation!r}; "
                "give other models a copy of this config"
            )
        embeds = place_sinks(self.model.get_input_embeddings()(layout.input_ids), layout, self.sink_embeddings)
        # auto: picked for this layout, dtype, head size and number of heads
        config = self.model.config
        block_attention = prepare_block_attention(layout, self.attn_backend, embeds.dtype, config_head_dim(config),
                                                  config.num_attention_heads)
        out = self.model.base_model(
            inputs_embeds=embeds,
            position_ids=layout.position_ids,
            use_cache=False,
            block_attention=block_attention,
        )
        return out.last_hidden_state

    def token_hidden_states(
        self,
        input_ids: torch.Tensor,
        block_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        released: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, BlockLayout]:
        """Final hidden states ``[B, S, hidden]`` at the caller's tokens (sink slots dropped), and the layout."""
        layout = self.layout(input_ids, block_ids, attention_mask, released)
        return self._at_tokens(self.hidden_states_for_layout(layout), layout), layout

    @staticmethod
    def _at_tokens(hidden: torch.Tensor, layout: BlockLayout) -> torch.Tensor:
        """``[B, T, H]`` packed states -> ``[B, S, H]`` at the caller's tokens."""
        return hidden.gather(1, layout.token_index[..., None].expand(-1, -1, hidden.shape[-1]))

    def forward_layout(self, layout: BlockLayout) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` at every packed position of an already packed layout."""
        return self.model.get_output_embeddings()(self.hidden_states_for_layout(layout))

    def forward(
        self,
        input_ids: torch.Tensor,
        block_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        released: torch.Tensor | None = None,
        full_attention: bool = False,
    ) -> CausalLMOutputWithPast:
        """Logits ``[B, S, vocab]`` aligned with ``input_ids [B, S]``.

        ``block_ids [B, S]``: context block index per token, -1 for the global block. Without
        ``block_ids`` (or with ``full_attention=True``) the model runs plain causal attention.
        """
        if full_attention or block_ids is None:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            return CausalLMOutputWithPast(logits=out.logits)
        layout = self.layout(input_ids, block_ids, attention_mask, released)
        hidden = self._at_tokens(self._block_hidden(layout), layout)
        return CausalLMOutputWithPast(logits=self.model.get_output_embeddings()(hidden))


def load_scored_model(path: str, teacher: BlockAttentionLM, what: str) -> BlockAttentionLM:
    """A model to score against ``teacher`` (float32, eval mode, on the teacher's device); a vocabulary that differs
    from the teacher's is refused, naming ``what`` (e.g. ``--models student=PATH``)."""
    model = BlockAttentionLM.from_pretrained(path, dtype=torch.float32).to(teacher.sink_embeddings.device).eval()
    if model.config.vocab_size != teacher.config.vocab_size:  # scored with the teacher's tokens and distributions
        from lit_block.errors import UsageError

        raise UsageError(f"{what}: vocabulary of {model.config.vocab_size} tokens differs from the teacher's "
                         f"({teacher.config.vocab_size})")
    return model
