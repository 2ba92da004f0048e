#!/usr/bin/env bash
# Install moma into ./.venv (plain pip; torch/torchvision come from this machine's local
# wheels) and the embedded dataset (Debian package dataset-fashion-mnist).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "note: dataset-fashion-mnist not installed (needs root: apt-get install dataset-fashion-mnist);" \
         "moma will try torchvision's downloader instead" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2> >(grep -v "^WARNING: Location" >&2)
