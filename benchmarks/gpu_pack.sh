#!/usr/bin/env bash
# Pack what benchmarks/gpu_check.py needs on a lent GPU (issue 14): the GPU machine has no
# registry and a 64 MiB working tree, and it has torch, torchvision, timm, numpy, Pillow,
# scikit-learn, PyYAML, tqdm and matplotlib (Python 3.12). Run from the repository root:
#   .data/cifar10/{train,test}.tar.gz   the CIFAR-10 archives (19 MB), copied from DATA
#   .whl/*.whl                          faiss-cpu, lightly and lightly's missing needs (19 MB)
# Both folders are git-ignored; name them in the device call's carry. Prints that command.
set -euo pipefail
DATA=${1:-../shared/datasets/cifar10}
mkdir -p .data/cifar10 .whl
cp "$DATA/train.tar.gz" "$DATA/test.tar.gz" .data/cifar10/
for pkg in faiss-cpu==1.15.1 lightly==1.6.0 hydra-core==1.3.8 omegaconf==2.4.0 antlr4-python3-runtime==4.13.2; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$pkg"
done
du -sh .data .whl
cat <<'CMD'
device run, carry [".whl", ".data"], timeout_s 560:
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src PYTHONUNBUFFERED=1 && python3 benchmarks/gpu_check.py --data .data/cifar10 --out $OUT/gpu_check
CMD
