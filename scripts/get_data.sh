#!/usr/bin/env bash
# Get Fashion-MNIST: Debian's dataset-fashion-mnist when root with apt, otherwise torchvision's download.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/t10k-labels-idx1-ubyte.gz" ] || [ -f "$DIR/t10k-labels-idx1-ubyte" ]; then
  echo "Fashion-MNIST present in $DIR"
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
  exit 0
fi
CACHE="${SPARSEKIT_DATA:-$HOME/.cache/sparsekit}"
echo "not root or no apt: downloading Fashion-MNIST with torchvision into $CACHE (set SPARSEKIT_DATA=$CACHE)"
.venv/bin/python -c "import sys, torchvision; [torchvision.datasets.FashionMNIST(sys.argv[1], train=t, download=True) for t in (True, False)]" "$CACHE"
