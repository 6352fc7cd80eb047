#!/usr/bin/env bash
# CI's newcomer test: a fresh virtual environment follows README.md's "Install" section verbatim, then the main
# job (`lit-block pipeline`) runs every stage with the real embedded models on a tiny budget: a two-source corpus,
# two distillation steps. Nothing is written outside a temporary folder, which is removed at the end.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
# On a CPU-only machine the README's `pip install torch` is meant to get the CPU build; on this kind of machine
# that build is torch==2.13.0 (an unpinned torch is a CUDA build of several GB): a constraint, not a changed command.
echo "torch==2.13.0" > "$work/constraints.txt"
export PIP_CONSTRAINT="$work/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
# the install block, as the README writes it (run from the checkout, as a newcomer does after cloning)
python3 - "$repo/README.md" > "$work/install.sh" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
section = text[text.index("\n## Install"):]
print(re.search(r"```bash\n(.*?)```", section, re.S)[1])
EOF
echo "newcomer: the README's install section:"; cat "$work/install.sh"
(cd "$repo" && bash -euo pipefail "$work/install.sh")
"$work/venv/bin/python" -c "import lit_block, torch; print('newcomer: installed lit-block', lit_block.__version__, 'torch', torch.__version__)"

# the quickstart in a folder of its own, as a user would run it, on a tiny budget
mkdir "$work/project" && cd "$work/project"
export LIT_BLOCK_CACHE="$work/cache"
unset MLFLOW_TRACKING_URI  # the README's default: ./mlflow.db
lit-block data build --sources devil jargon
lit-block pipeline --config "$repo/experiments/pipeline/cpu.yaml" --segmenter-documents 4 --segmenter-epochs 1 \
  --segmenter-layers 1 --sample-tokens 128 --global-tokens 32 --min-block-tokens 8 --max-block-tokens 64 \
  --distill-documents 4 --distill-steps 2 --val-batches 1 --eval-samples 2 --sweep-granularities "[32, 64]" \
  --sweep-batches 1 | tee "$work/pipeline.log"
grep -q "| distilled |" "$work/pipeline.log"
test -f pipeline/compare/tradeoff.png
echo "newcomer: install and quickstart passed"
