#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one prepared run for a lent GPU machine (about 6-8 minutes on one GPU):
#   1. the CUDA tests (`pytest -m cuda tests/test_cuda.py tests/test_app_adapt.py`): prediction GPU == CPU,
#      bf16-autocast training of every PEFT method and every distiller, SAM2 training, an adapter moved from GPU
#      to CPU, DDP on NCCL (needs 2 GPUs) and the app's adaptation on the GPU (needs napari there);
#   2. training speed and memory on the GPU: benchmarks/bench_train.py, tiny and random-init ViT-B, batch 4;
#   3. with --reproduce: the small PEFT reproduction on the nuclei split (experiments/nuclei_peft.toml), as far
#      as 5 minutes go (it is resumable; the table says which runs finished).
#
# Here (a machine with the project's venv), once:   bash scripts/gpu_checks.sh --prepare [--with-data]
#   builds .gpu_wheels/ (1.5 MB: the pure-Python packages and the cp312 pycocotools wheel that a GPU image with
#   torch, torchvision, timm, scikit-image, ... lacks) and, with --with-data, copies data/nuclei to .gpu_data/
#   (make it first: python scripts/make_nuclei_split.py). Both folders are git-ignored: name them in `carry`.
# There (the repository root of the copy, $OUT set):  bash scripts/gpu_checks.sh [--reproduce]
#   everything it prints is also kept under $OUT (default ./gpu_out): env.txt, pytest_cuda.txt,
#   bench_train_cuda.json / .txt, reproduce.txt, reproduce_table.md and reproduce_results.csv (8 files at most:
#   what the device tool brings back).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    PY=${PY:-.venv/bin/python}
    rm -rf .gpu_wheels && mkdir .gpu_wheels
    "$PY" -m pip download -q --no-deps -d .gpu_wheels --python-version 3.12 --only-binary=:all: \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 pycocotools
    SAM2_BUILD_CUDA=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .gpu_wheels \
        pysodmetrics "segment-anything==1.0" platformdirs "mobilesam-mirror==1.0.0" "segment-anything-hq==0.3" \
        "hydra-core==1.3.*" "omegaconf==2.3.*" iopath "antlr4-python3-runtime==4.9.3" "sam2==1.1.0"
    if [[ "${2:-}" == "--with-data" ]]; then
        [[ -d data/nuclei/train ]] || { echo "no data/nuclei: run python scripts/make_nuclei_split.py first"; exit 2; }
        rm -rf .gpu_data && mkdir .gpu_data && cp -r data/nuclei .gpu_data/
    fi
    du -sh .gpu_wheels .gpu_data 2>/dev/null
    echo "now: run(command='bash scripts/gpu_checks.sh [--reproduce]', carry=['.gpu_wheels'(, '.gpu_data')])"
    exit 0
fi

OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
status=0

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'gpus', torch.cuda.device_count(), 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
    git log --oneline -1 2>/dev/null
} 2>&1 | tee "$OUT/env.txt"

if [[ -d .gpu_wheels ]]; then
    "$PY" -m pip install -q --no-index --no-deps .gpu_wheels/*.whl 2>&1 | tail -3
else
    echo "no .gpu_wheels/ (bash scripts/gpu_checks.sh --prepare here, then carry it): using what is installed"
fi

echo "== 1. CUDA tests"
timeout 360 "$PY" -m pytest -m cuda tests/test_cuda.py tests/test_app_adapt.py -q -p no:cacheprovider -p no:xvfb -rs 2>&1 \
    | tee "$OUT/pytest_cuda.txt" || status=1

echo "== 2. training speed and memory on the GPU"
timeout 240 "$PY" benchmarks/bench_train.py --models tiny,vit_b --device cuda --batch 4 --measure 10 \
    --json "$OUT/bench_train_cuda.json" 2>&1 | tee "$OUT/bench_train_cuda.txt" || status=1

if [[ "${1:-}" == "--reproduce" ]]; then
    echo "== 3. small reproduction: experiments/nuclei_peft.toml (tiny SAM, nuclei 32/32, 14 methods x 3 seeds)"
    if [[ -d .gpu_data/nuclei ]]; then
        # resumable: what finishes inside the time limit is reported (the table says which runs are missing)
        timeout 300 "$PY" -m infosam_core experiment experiments/nuclei_peft.toml --data-root .gpu_data \
            --out gpu_runs 2>&1 | tail -40 | tee "$OUT/reproduce.txt"
        "$PY" -m infosam_core experiment experiments/nuclei_peft.toml --out gpu_runs --report 2>&1 | tail -3
        cp gpu_runs/table.md "$OUT/reproduce_table.md" 2>/dev/null || status=1
        cp gpu_runs/results.csv "$OUT/reproduce_results.csv" 2>/dev/null || status=1
    else
        echo "no .gpu_data/nuclei: bash scripts/gpu_checks.sh --prepare --with-data here, then carry .gpu_data"
        status=1
    fi
fi
exit $status
