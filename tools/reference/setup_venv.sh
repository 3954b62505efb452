#!/usr/bin/env bash
# Creates tools/reference/.venv with the pinned packages (for regenerating test fixtures only).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt
echo "ok: activate with . tools/reference/.venv/bin/activate"
