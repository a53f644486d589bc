#!/usr/bin/env bash
# Installs crepe 0.0.16 (the CREPE pitch tracker) into the environment of PYTHON.
#
# crepe's setup.py imports pkg_resources (removed in setuptools 81) and downloads its model
# weights from GitHub while building, so a plain `pip install crepe` fails today. This script:
#   - does nothing if crepe 0.0.16 with usable 'tiny' weights is already installed;
#   - installs setuptools<81 and builds crepe without build isolation;
#   - with CREPE_WEIGHTS_DIR set, takes the weight files from that directory instead of the
#     internet (air-gapped clusters). It should hold model-<capacity>.h5.bz2 or model-<capacity>.h5
#     for the capacities you use ('full' and 'tiny' at least); missing capacities are installed
#     as empty files and fail to load with a clear error.
#
# Usage: tools/install_crepe.sh [PYTHON]     (default: python3 on PATH)
set -euo pipefail
py="${1:-python3}"

if "$py" - <<'PY' 2>/dev/null; then
import importlib.metadata as md, os, sys
import crepe
ok = md.version("crepe") == "0.0.16" and os.path.getsize(
    os.path.join(os.path.dirname(crepe.__file__), "model-tiny.h5")) > 0
sys.exit(0 if ok else 1)
PY
  echo "crepe 0.0.16 already installed for $py"
  exit 0
fi

"$py" -m pip install -q "setuptools<81" wheel

if [ -z "${CREPE_WEIGHTS_DIR:-}" ]; then
  "$py" -m pip install -q --no-build-isolation "crepe==0.0.16"
else
  weights="$(cd "$CREPE_WEIGHTS_DIR" && pwd)"
  # crepe's setup.py fetches its weights with urllib; tools/crepe_offline answers from the folder.
  hook="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/crepe_offline"
  CREPE_WEIGHTS_DIR="$weights" PYTHONPATH="$hook${PYTHONPATH:+:$PYTHONPATH}" \
    "$py" -m pip install -q --no-build-isolation --no-cache-dir "crepe==0.0.16"
fi
"$py" -c "import crepe, os; d = os.path.dirname(crepe.__file__); print('crepe', crepe.__version__, 'weights:', {c: os.path.getsize(os.path.join(d, f'model-{c}.h5')) for c in ('tiny', 'full')})"
