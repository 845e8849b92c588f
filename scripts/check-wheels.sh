#!/usr/bin/env bash
# Build a wheel of the kernel and of every plugin, install `trellis` plus one backend from those wheels alone
# into a clean virtualenv, and train a step there: the distributions work without this checkout.
#   scripts/check-wheels.sh [BACKEND]   BACKEND: a plugin distribution (default trellis-mixed, trained in bf16-mixed)
# Third-party requirements (torch under constraints.txt, pluggy, pyyaml, ...) come from the package index;
# every trellis distribution comes from the wheels built here (--no-index), never from an index.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-trellis-mixed}"
builder="${TRELLIS_VENV:-.venv}/bin/python"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export PIP_CONSTRAINT="$PWD/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1

# Build from a copy, so that no build/ or *.egg-info lands in the checkout.
mkdir "$work/src"
tar --exclude=__pycache__ --exclude='*.egg-info' --exclude=build --exclude=dist \
  -cf - pyproject.toml README.md core plugins | tar -xf - -C "$work/src"
mapfile -t projects < <(cd "$work/src" && find plugins -mindepth 2 -maxdepth 3 -name pyproject.toml -printf '%h\n' | sort)
(cd "$work/src" && "$OLDPWD/$builder" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$work/wheels" \
  . "${projects[@]}")
echo "built $(ls "$work/wheels" | wc -l) wheels: $(cd "$work/wheels" && ls | tr '\n' ' ')"

python3 -m venv "$work/venv"
venv="$work/venv/bin"
# The third-party requirements of what will be installed, read from the wheels' metadata.
"$venv/python" - "$work/wheels" trellis "$backend" > "$work/requirements.txt" <<'EOF'
import sys, zipfile
from email.parser import Parser
from pathlib import Path

wheels, wanted = Path(sys.argv[1]), sys.argv[2:]
metadata = {}
for wheel in wheels.glob("*.whl"):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(name).decode())
    metadata[message["Name"].lower().replace("_", "-")] = message.get_all("Requires-Dist") or []
seen, outside, queue = set(), set(), list(wanted)
while queue:
    name = queue.pop()
    if name in seen:
        continue
    seen.add(name)
    for requirement in metadata[name]:
        if "extra ==" in requirement:
            continue
        project = requirement.split(";")[0].strip()
        key = project.split("<")[0].split(">")[0].split("=")[0].split("!")[0].split("[")[0].strip().lower()
        (queue.append(key) if key.startswith("trellis") else outside.add(project))
print("\n".join(sorted(outside)))
EOF
"$venv/pip" install --quiet -r "$work/requirements.txt"
"$venv/pip" install --quiet --no-index --find-links "$work/wheels" trellis "$backend"

cd "$work"  # away from the checkout, so nothing is imported from it
"$venv/python" - <<'EOF'
import torch
from torch.utils.data import DataLoader, TensorDataset

import trellis


class Regression(trellis.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


assert "/venv/" in trellis.__file__, trellis.__file__
data = DataLoader(TensorDataset(torch.randn(8, 4), torch.randn(8, 1)), batch_size=4)
trainer = trellis.Trainer(max_steps=1, precision="bf16-mixed", enable_progress_bar=False)
trainer.fit(Regression(), data)
assert trainer.global_step == 1
print(f"trained 1 step with trellis {trellis.__version__} from {trellis.__file__}")
EOF
"$venv/trellis" plugins --check
"$venv/pip" list 2>/dev/null | grep -i '^trellis'
