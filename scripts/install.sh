#!/usr/bin/env bash
# Install Trellis into a virtualenv (.venv, or $TRELLIS_VENV).
#   scripts/install.sh        the kernel with its default plugins (cpu, 32-true, csv, torch) and the examples' needs
#   scripts/install.sh --all  every plugin distribution under plugins/ and the test tools as well
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TRELLIS_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
export PIP_CONSTRAINT="$PWD/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1 DS_BUILD_OPS=0
pip install -q torch==2.13.0 setuptools
defaults=(plugins/accelerators/cpu plugins/precision/true plugins/loggers/csv plugins/checkpoint/torch)
if [ "${1:-}" = "--all" ]; then
  mapfile -t plugins < <(find plugins -mindepth 2 -maxdepth 3 -name pyproject.toml -printf '%h\n' | sort)
  extras="[test,examples,cli]"
else
  plugins=("${defaults[@]}")
  extras="[examples]"
fi
editable=()
for plugin in "${plugins[@]}"; do
  # with --all, plugins that declare a test extra (servers their tests start) get it
  if [ "${1:-}" = "--all" ] && grep -q '^test = ' "$plugin/pyproject.toml"; then
    editable+=(-e "$plugin[test]")
  else
    editable+=(-e "$plugin")
  fi
done
pip install -q --no-build-isolation -e ".$extras" "${editable[@]}"
