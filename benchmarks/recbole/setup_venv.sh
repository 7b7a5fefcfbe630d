#!/usr/bin/env bash
# Create the separate RecBole virtualenv used by benchmarks/recbole/run.py.
#
# RecBole is NOT a dependency of sessrec: it lives in its own venv with the versions that install and
# import together (docs/leaderboard.md, ../shared/docs/environment.md "Running RecBole side by side"):
#   torch 2.13.0 (CPU build, from the local wheel directory via pip; uv would fetch CUDA builds),
#   numpy 1.26.4 (numpy 2 breaks recbole.config), pandas 2.2.3, scipy 1.11.4, scikit-learn 1.5.2,
#   setuptools >=77.0.3,<81 (ray, pinned by recbole, imports pkg_resources), recbole 1.2.1.
#
# Usage: bash benchmarks/recbole/setup_venv.sh [VENV_DIR]     (default: <repo>/.venv-recbole;
#        RECBOLE_VENV=... works too). PYTHON=python3.11 picks the interpreter.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${1:-${RECBOLE_VENV:-$repo/.venv-recbole}}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import recbole" >/dev/null 2>&1; then
    echo "RecBole venv already present: $venv (delete it to rebuild)"
    exit 0
fi

echo "creating $venv with $("$python" --version 2>&1)"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# One resolver run so pip cannot pull a newer numpy/torch behind our back; the global pip constraints
# file of the machine (if any) still applies. torch 2.13.0 resolves to the CPU wheel on local disk.
"$venv/bin/python" -m pip install --quiet \
    "torch==2.13.0" \
    "numpy==1.26.4" \
    "pandas==2.2.3" \
    "scipy==1.11.4" \
    "scikit-learn==1.5.2" \
    "setuptools>=77.0.3,<81" \
    "pyyaml" \
    "recbole==1.2.1"

"$venv/bin/python" - <<'PY'
import numpy, torch, recbole
print(f"ok: recbole {recbole.__version__}, torch {torch.__version__}, numpy {numpy.__version__}")
PY
echo "RecBole venv ready: $venv"
