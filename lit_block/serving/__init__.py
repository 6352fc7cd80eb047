"""Serving block attention: per-block KV caches computed once and reused at any position.

    store = BlockKVStore(max_bytes=4 << 30)
    result = generate(model, ["passage one ...", "passage two ..."], "Question: ...\nAnswer:", store=store)

* :mod:`lit_block.serving.rope`: re-rotates cached keys to a new offset (exact for RoPE);
* :mod:`lit_block.serving.kv_store`: the content-keyed LRU store of per-block caches;
* :mod:`lit_block.serving.generation`: context blocks + query -> answer, prefilling only misses;
* :mod:`lit_block.serving.prompts`: a conversation and its documents -> blocks and query (the chat template);
* :mod:`lit_block.serving.server`: ``lit-block serve``, the OpenAI-compatible HTTP server (docs/serve.md).
"""

from lit_block.serving.generation import Generation, GenerationConfig, GenerationResult, generate
from lit_block.serving.kv_store import BlockKV, BlockKVStore
from lit_block.serving.prompts import Document, DocumentCutter, PromptBuilder
from lit_block.serving.rope import KeyRerotator

__all__ = ["BlockKV", "BlockKVStore", "Document", "DocumentCutter", "Generation", "GenerationConfig", "GenerationResult",
           "KeyRerotator", "PromptBuilder", "generate"]
