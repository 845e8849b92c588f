#!/usr/bin/env bash
# Every GPU test and the GPU benches on a machine with CUDA GPUs, then one summary table.
#
#   bash scripts/gpu-check.sh                 run them (about 5 minutes on one GPU; the rows stop at 8)
#   bash scripts/gpu-check.sh --fetch-wheels  on a machine with PyPI: put DeepSpeed and what it needs beyond a
#                                             CUDA PyTorch image into .whl/, for GPU machines without internet
#
# Rows: the cuda accelerator's tests and conformance kit, DDP over nccl on every visible GPU, 16-mixed,
# bf16-mixed, bf16-true, fp8 (where the GPU and transformer_engine allow), FSDP, DeepSpeed ZeRO stages 2 and 3,
# a step-time bench against a plain PyTorch loop (small GPT) and DDP against hand-written DDP.
# Each row: PASS, FAIL or SKIP (with the reason), seconds, and a figure. Without a GPU every row is SKIP and the
# exit status is 0; any FAIL makes it 1. Each row's full output is kept in $TRELLIS_GPU_CHECK_LOGS (default: a
# new temporary folder, printed at the end).
#
# Python: $TRELLIS_GPU_PYTHON, .venv/bin/python, .venv-gpu/bin/python, then python3: the first whose torch sees
# a GPU. torch is never installed: when that interpreter lacks Trellis, .venv-gpu is made on top of it (its
# packages, torch included, stay visible) and the kernel and every plugin are installed there editable and
# offline (no index, no dependencies), with any wheels found in .whl/.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

BUDGET_S=480
GPU_VENV=.venv-gpu
WHEELS=.whl
START=$SECONDS
LOGS="${TRELLIS_GPU_CHECK_LOGS:-$(mktemp -d -t trellis-gpu-check-XXXXXX)}"
mkdir -p "$LOGS"
ROWS=("cuda accelerator" "ddp nccl" "16-mixed" "bf16-mixed" "bf16-true" "fp8" "fsdp" "deepspeed stage 2"
      "deepspeed stage 3" "bench: step vs plain loop" "bench: ddp vs hand-written")
NAMES=() RESULTS=() TIMES=() FIGURES=()
HEADER="no GPU"

record() {  # NAME RESULT SECONDS FIGURE
  NAMES+=("$1") RESULTS+=("$2") TIMES+=("$3") FIGURES+=("$4")
}

log_name() {
  echo "$LOGS/$(echo "$1" | tr -c 'A-Za-z0-9\n' '_').log"
}

remaining() {
  echo $((BUDGET_S - (SECONDS - START)))
}

# Runs COMMAND with at most LIMIT seconds (fewer when the budget is nearly spent); sets RC, ELAPSED and LOG.
timed() {  # NAME LIMIT COMMAND...
  local name=$1 limit=$2 left
  shift 2
  left=$(($(remaining) - 10))
  LOG=$(log_name "$name")
  if [ "$left" -lt 20 ]; then
    RC=skip ELAPSED=0
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local began=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$LOG" 2>&1
  RC=$?
  ELAPSED=$((SECONDS - began))
  [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ] && RC="timeout after ${limit} s"
}

pytest_row() {  # NAME LIMIT PYTEST-ARGUMENTS...
  local name=$1 limit=$2 summary passed failures reason
  shift 2
  timed "$name" "$limit" "$PY" -m pytest -q -rs -p no:cacheprovider "$@"
  if [ "$RC" = skip ]; then
    record "$name" SKIP 0 "not started: the ${BUDGET_S} s budget is spent"
    return
  fi
  summary=$(grep -E '^[0-9]+ (passed|failed|skipped|error|errors|deselected|xfailed|xpassed)' "$LOG" | tail -1 |
            sed -E 's/ in [0-9.]+s.*$//; s/,? ?[0-9]+ warnings?//; s/,? ?[0-9]+ deselected//')
  passed=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
  failures=$(echo "$summary" | grep -oE '[0-9]+ (failed|errors?)')
  if [[ "$RC" == timeout* ]]; then
    record "$name" FAIL "$ELAPSED" "$RC; ${summary:-no summary} (log $LOG)"
  elif [ "$RC" != 0 ] && [ "$RC" != 5 ] || [ -n "$failures" ]; then
    record "$name" FAIL "$ELAPSED" "${summary:-pytest exit $RC}: $(grep -m1 -E '^(FAILED|ERROR) ' "$LOG" | cut -c1-120) (log $LOG)"
  elif [ -z "$passed" ]; then
    reason=$(grep -m1 '^SKIPPED' "$LOG" | sed -E 's/^SKIPPED \[[0-9]+\] [^ ]+:[0-9]+: //')
    record "$name" SKIP "$ELAPSED" "${reason:-no test selected}"
  else
    record "$name" PASS "$ELAPSED" "$summary"
  fi
}

bench_row() {  # NAME LIMIT COMMAND...
  local name=$1 limit=$2 figure
  shift 2
  timed "$name" "$limit" "$@"
  if [ "$RC" = skip ]; then
    record "$name" SKIP 0 "not started: the ${BUDGET_S} s budget is spent"
    return
  fi
  figure=$(grep -m1 '^FIGURE: ' "$LOG" | sed 's/^FIGURE: //')
  if [ "$RC" = 0 ] && [ -n "$figure" ]; then
    record "$name" PASS "$ELAPSED" "$figure"
  else
    record "$name" FAIL "$ELAPSED" "exit $RC: $(grep -v '^\s*$' "$LOG" | tail -1 | cut -c1-120) (log $LOG)"
  fi
}

skip_rest() {  # REASON: every row not run yet is SKIP with it
  local row done_name found
  for row in "${ROWS[@]}"; do
    found=0
    for done_name in "${NAMES[@]}"; do [ "$done_name" = "$row" ] && found=1; done
    [ "$found" = 0 ] && record "$row" SKIP 0 "$1"
  done
}

print_table() {
  local index width=28 status=0
  echo
  echo "Trellis GPU check: $HEADER; $((SECONDS - START)) s"
  printf '%-*s %-6s %7s  %s\n' "$width" check result seconds figure
  for index in "${!NAMES[@]}"; do
    printf '%-*s %-6s %7s  %s\n' "$width" "${NAMES[$index]}" "${RESULTS[$index]}" "${TIMES[$index]}" \
      "${FIGURES[$index]}"
    [ "${RESULTS[$index]}" = FAIL ] && status=1
  done
  echo "logs: $LOGS"
  return $status
}

# -- which Python --------------------------------------------------------------------------------------------
probe() {  # PYTHON -> "torch-version cuda-version gpu-count" or nothing
  "$1" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null
}

choose_python() {  # sets PY and BASE_PY (the interpreter holding torch), or NO_GPU with what was found
  local candidate found
  local candidates=("${TRELLIS_GPU_PYTHON:-}" .venv/bin/python "$GPU_VENV/bin/python" "$(command -v python3 || true)")
  PY="" NO_GPU=""
  for candidate in "${candidates[@]}"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    found=$(probe "$candidate")
    if [ -z "$found" ]; then
      NO_GPU+="${NO_GPU:+; }$candidate has no torch"
      continue
    fi
    read -r TORCH_VERSION CUDA_VERSION GPUS <<<"$found"
    if [ "$GPUS" -gt 0 ]; then
      PY=$candidate
      return
    fi
    if [ "$CUDA_VERSION" = None ]; then
      NO_GPU+="${NO_GPU:+; }$candidate has torch $TORCH_VERSION, a CPU-only build"
    else
      NO_GPU+="${NO_GPU:+; }$candidate has torch $TORCH_VERSION (CUDA $CUDA_VERSION) but sees no GPU"
    fi
  done
}

has_trellis() {
  "$1" -c 'import trellis, trellis_cuda, trellis_ddp' 2>/dev/null
}

# Makes .venv-gpu on top of BASE (whose packages stay visible) and installs the working tree into it, offline.
make_gpu_venv() {  # BASE
  local base=$1 site distributions=(-e .)
  if [ ! -x "$GPU_VENV/bin/python" ]; then
    "$base" -m venv --without-pip --system-site-packages "$GPU_VENV" || return 1
    site=$("$GPU_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
    # a virtualenv made from a virtualenv sees only the outer interpreter's packages: add BASE's own (and their .pth)
    "$base" -c 'import site, sysconfig
paths = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
print("import site; " + "; ".join(f"site.addsitedir({path!r})" for path in dict.fromkeys(paths)))' \
      >"$site/_trellis_gpu_base.pth" || return 1
  fi
  if [ -f "$GPU_VENV/.installed" ] && [ -z "$(find pyproject.toml plugins "$WHEELS" -maxdepth 3 \
      \( -name pyproject.toml -o -name '*.whl' \) -newer "$GPU_VENV/.installed" 2>/dev/null)" ]; then
    return 0  # installed, and nothing to install changed since
  fi
  mapfile -t plugins < <(find plugins -mindepth 2 -maxdepth 3 -name pyproject.toml -printf '%h\n' | sort)
  for plugin in "${plugins[@]}"; do distributions+=(-e "$plugin"); done
  local pip=(env -u PIP_CONSTRAINT PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
             "$GPU_VENV/bin/python" -m pip install -q --no-index --no-deps)
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "${pip[@]}" "$WHEELS"/*.whl || return 1
  fi
  "${pip[@]}" --no-build-isolation "${distributions[@]}" || return 1
  touch "$GPU_VENV/.installed"
}

fetch_wheels() {
  local python=${TRELLIS_FETCH_PYTHON:-.venv/bin/python} target=${TRELLIS_GPU_PYTHON_VERSION:-3.12} pins
  [ -x "$python" ] || python=python3
  mkdir -p "$WHEELS"
  # the versions this checkout is tested with; DeepSpeed publishes source only, so its (pure Python) wheel is built here
  mapfile -t pins < <("$python" -c 'from importlib.metadata import version
for name in ("deepspeed", "hjson", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions"):
    print(f"{name}=={version(name)}")')
  if [ "${#pins[@]}" -ne 7 ]; then
    echo "$python lacks DeepSpeed or what it needs: install the test extras first (bash scripts/install.sh --all)" >&2
    return 1
  fi
  DS_BUILD_OPS=0 "$python" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" "${pins[0]}" || return 1
  "$python" -m pip download -q --no-deps --only-binary=:all: --implementation cp --python-version "$target" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "${pins[@]:1}" || return 1
  du -sh "$WHEELS"
  ls "$WHEELS"
}

# -- main ----------------------------------------------------------------------------------------------------
if [ "${1:-}" = "--fetch-wheels" ]; then
  fetch_wheels
  exit $?
fi

choose_python
if [ -z "$PY" ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    HEADER="nvidia-smi lists a GPU, but no Python here can use it"
    record environment FAIL 0 "${NO_GPU:-no python3}: install a CUDA build of torch, or set TRELLIS_GPU_PYTHON"
    skip_rest "the environment failed"
  else
    HEADER="no CUDA GPU visible"
    record environment SKIP 0 "no CUDA GPU: ${NO_GPU:-no python3 found}"
    skip_rest "no CUDA GPU visible"
  fi
  print_table
  exit $?
fi

HEADER="$GPUS GPU(s), torch $TORCH_VERSION (CUDA $CUDA_VERSION) in $PY"
began=$SECONDS
how="$PY"
if [ "$PY" = "$GPU_VENV/bin/python" ] || ! has_trellis "$PY"; then
  if make_gpu_venv "$PY" >"$(log_name environment)" 2>&1 && has_trellis "$GPU_VENV/bin/python"; then
    how="$GPU_VENV on $PY"
    PY=$GPU_VENV/bin/python
  else
    record environment FAIL $((SECONDS - began)) "installing into $GPU_VENV failed: $(tail -1 "$(log_name environment)") (log $(log_name environment))"
    skip_rest "the environment failed"
    print_table
    exit 1
  fi
fi
HEADER=$("$PY" -c 'import platform, torch
names = " + ".join(sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}))
print(f"{torch.cuda.device_count()} x {names}, torch {torch.__version__} (CUDA {torch.version.cuda}), python {platform.python_version()}")' 2>&1 | tail -1)
VERSIONS=$("$PY" -c 'from importlib.metadata import version, PackageNotFoundError
def v(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"
print(", ".join(f"{name} {v(name)}" for name in ("pluggy", "pytest", "deepspeed", "transformer_engine")))')
record environment PASS $((SECONDS - began)) "$how; $VERSIONS"

CUDA_TESTS=plugins/accelerators/cuda/tests
MIXED_TESTS=plugins/precision/mixed/tests
pytest_row "cuda accelerator" 150 "$CUDA_TESTS/test_cuda_accelerator.py" "$CUDA_TESTS/test_cuda_rng.py" \
  "$CUDA_TESTS/test_cuda_conformance.py" "$CUDA_TESTS/test_cuda_precision.py::test_mode_trains_a_transformer_on_the_gpu_in_its_dtypes[32-true]"
pytest_row "ddp nccl" 150 "$CUDA_TESTS/test_cuda_strategies.py" -k ddp
pytest_row "16-mixed" 90 "$CUDA_TESTS/test_cuda_precision.py" "$MIXED_TESTS/test_cuda_mixed_precision.py" \
  -k "16-mixed and not bf16"
pytest_row "bf16-mixed" 90 "$CUDA_TESTS/test_cuda_precision.py" "$MIXED_TESTS/test_cuda_mixed_precision.py" \
  -k bf16-mixed
pytest_row "bf16-true" 90 "$CUDA_TESTS/test_cuda_precision.py" -k bf16-true
pytest_row "fp8" 120 "$MIXED_TESTS/test_fp8_precision.py::test_fp8_replaces_layers_with_transformer_engine_and_trains" \
  "$MIXED_TESTS/test_mixed_conformance.py" -k fp8
pytest_row "fsdp" 150 "$CUDA_TESTS/test_cuda_strategies.py" -k fsdp
pytest_row "deepspeed stage 2" 180 "$CUDA_TESTS/test_cuda_strategies.py" -k deepspeed_stage_2
pytest_row "deepspeed stage 3" 180 "$CUDA_TESTS/test_cuda_strategies.py" -k deepspeed_stage_3
bench_row "bench: step vs plain loop" 150 "$PY" bench/gpu_step.py
bench_row "bench: ddp vs hand-written" 180 "$PY" bench/gpu_ddp.py
print_table
