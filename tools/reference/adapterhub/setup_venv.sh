#!/usr/bin/env bash
# Creates tools/reference/adapterhub/.venv with the pinned packages (for regenerating
# tests/fixtures/adapterhub only).
#   setup_venv.sh                 installs torch from requirements-torch.txt (PyPI, large)
#   REUSE_TORCH=1 setup_venv.sh   reuses the torch of tools/reference/.venv (same pin; another venv's
#                                 python with REUSE_TORCH_PYTHON=...) through a .pth file appended to
#                                 sys.path, so this venv's transformers 4.57.6 shadows the transformers 5
#                                 installed there
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -r requirements.txt
if [[ "${REUSE_TORCH:-0}" == "1" ]]; then
  main_site=$("${REUSE_TORCH_PYTHON:-../.venv/bin/python}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  own_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$main_site" > "$own_site/zz_reuse_reference_torch.pth"
else
  .venv/bin/pip install -q -r requirements-torch.txt
fi
.venv/bin/python -c 'import torch, transformers, adapters; print("torch", torch.__version__, "transformers", transformers.__version__, "adapters", adapters.__version__)'
echo "ok: run .venv/bin/python tools/reference/adapterhub/make_adapter_fixtures.py from the repository root"
