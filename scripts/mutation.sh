#!/usr/bin/env bash
# Mutation score of the core numeric modules (docs/testing.md): mutmut 3 mutates one module at a
# time and runs only that module's fast tests against each mutant.
#
#   scripts/mutation.sh                 every module below (about 30-40 min on 2 shared cores)
#   scripts/mutation.sh shards masking  some of them
#
# Needs the dev extra (`make setup`) and mutmut (`pip install -c constraints.txt mutmut==3.8.1`,
# also in the `mutation` extra). The work happens in build/mutation/MODULE/ (a copy of src and
# tests). mutmut puts its mutated copy first on sys.path, so the runs use a venv that sees the
# project venv's packages but not its editable glotta (which would win over the mutated copy).
# Results: build/mutation/MODULE/{summary.txt,survivors.txt}, printed at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
WORK="$ROOT/build/mutation"
RUNNER="$WORK/venv"

# module name -> "source files|pytest arguments (the module's fast tests)"
declare -A MODULES=(
  [losses]="src/glotta/distill/losses.py|tests/distill/test_distill.py tests/distill/test_encoder_references.py -k 'hand_computation or projection or weighted_sum or mse_sum or refused or term_means'"
  [perplexity]="src/glotta/evaluate/perplexity.py|tests/evaluate/test_perplexity.py -k 'not trained_model'"
  [masking]="src/glotta/masking.py|tests/train/test_data_properties.py tests/train/test_mlm.py -k 'masking or whole_words or japanese or masks_depend'"
  [shards]="src/glotta/tokenizer/shards.py|tests/tokenizer/test_shards.py tests/tokenizer/test_properties.py -k shard"
  [data]="src/glotta/train/data.py|tests/train/test_data_properties.py tests/train/test_train.py -k 'resume_at_any_step or ranks_take or sampler or block or refused'"
  [near_dedup]="src/glotta/corpus/near_dedup.py|tests/corpus/test_near_dedup.py tests/corpus/test_near_dedup_references.py"
  [ner]="src/glotta/evaluate/ner_data.py src/glotta/evaluate/ner.py|tests/evaluate/test_ner.py -k '(spans or scores_equal or scheme or align_labels or reader or summary or hironsancorpus_reads or hold_out) and not fine_tune'"
)
ORDER=(shards data losses perplexity near_dedup ner masking)
[ $# -gt 0 ] && ORDER=("$@")

if [ ! -x "$RUNNER/bin/python" ]; then
  python3 -m venv "$RUNNER"
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  mine=$("$RUNNER/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$site" > "$mine/project-venv.pth"  # its packages, not its .pth files (the editable glotta)
fi

# mutmut forks a child per mutant after the tests ran once in the parent: with more than one
# OpenMP thread, torch's thread pool deadlocks in the forked child (every mutant times out).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# Every mutant runs in a new pytest session: tokenizers the fixtures train are kept here
# (tests/train/conftest.py::trained_tokenizer) instead of being retrained for each mutant.
export GLOTTA_TEST_CACHE="$WORK/test-cache"

for name in "${ORDER[@]}"; do
  spec="${MODULES[$name]:?unknown module $name (one of: ${ORDER[*]})}"
  source_file="${spec%%|*}"
  tests="${spec#*|}"
  dir="$WORK/$name"
  rm -rf "$dir" && mkdir -p "$dir"
  cp -r "$ROOT/src" "$ROOT/tests" "$ROOT/benchmarks" "$dir/"  # some tests import benchmarks/
  # Test ids, not -k: -k also matches the names of the folders above a test, and the work
  # folder is named after the module ("masking" selected every test of test_mlm.py, whole
  # training runs). The ids are collected in a folder whose name no selection mentions.
  collect="$WORK/collect"
  rm -rf "$collect" && mkdir -p "$collect" && cp -r "$dir/src" "$dir/tests" "$dir/benchmarks" "$collect/"
  eval "set -- $tests"
  args=$(cd "$collect" && PYTHONPATH="$collect/src:$collect" "$RUNNER/bin/python" -m pytest \
    --collect-only -q --rootdir "$collect" -p no:cacheprovider "$@" 2>/dev/null | grep '::' | sed 's/\[.*//' | awk '!seen[$0]++' |
    python3 -c 'import json, sys; print(json.dumps(sys.stdin.read().split()))')
  [ "$args" != "[]" ] || { echo "no test selected for $name: $tests" >&2; exit 1; }
  cat > "$dir/pyproject.toml" <<TOML
[tool.mutmut]
source_paths = $(python3 -c 'import json, sys; print(json.dumps(sys.argv[1].split()))' "$source_file")
also_copy = ["src", "tests", "benchmarks"]
pytest_add_cli_args_test_selection = $args
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
TOML
  echo "mutation: $name ($source_file) ..."
  # Tests that start `python -m glotta` or `-c` subprocesses must import the mutated copy too.
  # The folders must exist before Python starts (a missing sys.path entry is cached as absent).
  export PYTHONPATH="$dir/mutants/src:$dir/mutants"
  mkdir -p "$dir/mutants/src"
  (cd "$dir" && nice -n "${NICE:-15}" "$RUNNER/bin/python" -m mutmut run --max-children 1 > run.log 2>&1) || true
  (cd "$dir" && "$RUNNER/bin/python" -m mutmut results --all true > results.txt 2>/dev/null) || true
  killed=$(grep -c ": killed" "$dir/results.txt" || true)
  total=$(grep -c ": " "$dir/results.txt" || true)
  grep -v ": killed" "$dir/results.txt" > "$dir/survivors.txt" || true
  echo "$name $source_file killed $killed of $total" | tee "$dir/summary.txt"
done
cat "$WORK"/*/summary.txt
