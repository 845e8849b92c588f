#!/usr/bin/env bash
# A separate virtualenv (.venv-xla) with torch 2.9.0 + torch_xla 2.9.0 for the XLA plugin's real tests
# (XLA's CPU device: PJRT_DEVICE=CPU). torch_xla pins its torch, so it cannot share the main venv.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TRELLIS_XLA_VENV:-.venv-xla}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/pip" install -q "setuptools>=68" wheel
"$venv/bin/pip" install -q torch==2.9.0 torch_xla==2.9.0 pyyaml "pluggy>=1.7" pytest
"$venv/bin/pip" install -q --no-build-isolation --no-deps -e . -e plugins/accelerators/cpu -e plugins/precision/true \
  -e plugins/loggers/csv -e plugins/checkpoint/torch -e plugins/accelerators/xla
