#!/usr/bin/env bash
# The checks a GPU machine is for, in one pass, each stage time-boxed so that a pass cut short
# keeps what it finished (every stage writes its own files into OUT_DIR):
#
#   bash benchmarks/gpu_check.sh OUT_DIR [STAGE ...]      (default: env tests suite demo)
#
#   env    nvidia-smi and the versions of JAX, its CUDA plugin, flax, optax and torch (env.txt)
#   tests  the GPU tests and the device-agnostic fast-path and attention tests on the GPU
#          (JAXLAB_TEST_PLATFORM=gpu; tests_gpu.log)
#   suite  the speed suite's GPU rows ($ROWS, in that order), each raced against PyTorch eager
#          where it has a PyTorch twin (suite_gpu.json, written after every row; suite_gpu.log)
#   demo   the README's first command's run, python launch.py --config=configs/hybrid.py:quick
#          (demo.log, demo_table.md, demo_summaries.json: each run's summary)
#
# PYTHON (default python3) must have jax with its CUDA plugin, the project installed
# (pip install -e ".[cuda13]", or --no-deps beside a JAX of your own) and, for the races, torch
# and timm. TESTS_S, SUITE_S and DEMO_S bound each stage's seconds; ROWS picks the suite's rows.
set -u
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [env tests suite demo]}
shift
stages=${*:-env tests suite demo}
py=${PYTHON:-python3}
rows=${ROWS:-peft/lora,vit_tiny/plain,vit_tiny/mhc_dynamic,vit_tiny/mhc_static,lenet/8192,peft/norm,peft/hybrid_parallel,peft/hybrid_layerwise/deep_lora,ladder,lenet/64,vit_tiny/race}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# Programs compiled by one stage are loaded by the next (and by a second pass on the same machine).
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/jaxlab-xla-cache}
cd "$(dirname "$0")/.."

stamp() { echo "[$(date +%T)] $*" >&2; }

# The configs import jaxlab.configs, which only an installed jaxlab has: say so before any stage.
if ! "$py" -c 'import jaxlab.configs.common' 2>/dev/null; then
  echo "error: $py cannot import jaxlab.configs: install the project first" \
       '(pip install -e ".[cuda13]", or pip install --no-deps --no-build-isolation -e .)' >&2
  exit 2
fi

for stage in $stages; do
  stamp "stage $stage"
  case $stage in
    env)
      { nvidia-smi
        "$py" - <<'EOF'
import importlib.metadata as md
for name in ('jax', 'jaxlib', 'jax-cuda13-plugin', 'jax-cuda12-plugin', 'flax', 'optax',
             'orbax-checkpoint', 'ml_collections', 'torch', 'timm'):
  try:
    print(name, md.version(name))
  except md.PackageNotFoundError:
    pass
import jax
print('devices', jax.devices(), 'kind', jax.devices()[0].device_kind)
print('memory_stats', {k: v for k, v in (jax.devices()[0].memory_stats() or {}).items()
                       if k in ('bytes_limit', 'bytes_in_use')})
EOF
      } > "$out/env.txt" 2>&1 ;;
    tests)
      # -m "": every test of these files, whatever its tier on the CPU (tests/timings.py).
      JAXLAB_TEST_PLATFORM=gpu timeout -k 10 "${TESTS_S:-240}" "$py" -m pytest -q -p no:cacheprovider \
        -m "" -rA --durations=15 tests/test_gpu.py tests/test_fast_path.py tests/test_attention.py \
        > "$out/tests_gpu.log" 2>&1
      echo "exit $?" >> "$out/tests_gpu.log" ;;
    suite)
      timeout -k 10 "${SUITE_S:-420}" "$py" -m benchmarks --only="$rows" --torch_python="$py" \
        --torch_modes=eager --out="$out/suite_gpu.json" > "$out/suite_gpu.log" 2>&1
      echo "exit $?" >> "$out/suite_gpu.log"
      pkill -f 'benchmarks.run' 2>/dev/null ;;  # a child the time limit left behind
    demo)
      rm -rf /tmp/jaxlab-demo
      timeout -k 10 "${DEMO_S:-240}" "$py" launch.py --config=configs/hybrid.py:quick \
        --workdir=/tmp/jaxlab-demo > "$out/demo.log" 2>&1
      echo "exit $?" >> "$out/demo.log"
      cp /tmp/jaxlab-demo/table.md "$out/demo_table.md" 2>/dev/null
      "$py" -c 'import glob, json, sys; json.dump({p.split("/")[-2]: json.load(open(p)) for p in sorted(glob.glob("/tmp/jaxlab-demo/*/summary.json"))}, open(sys.argv[1], "w"), indent=1)' "$out/demo_summaries.json" ;;
    *) echo "unknown stage $stage (env tests suite demo)" >&2; exit 2 ;;
  esac
done
stamp done
