#!/usr/bin/env bash
# Installs everything the contact server needs on a fresh Debian 12 machine, idempotently.
#   bash scripts/setup.sh          # what `serve` needs
#   bash scripts/setup.sh --test   # plus the test peers (SIPp, baresip), chromium and PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

APT_RUN=(espeak-ng sox libsndfile1)
APT_TEST=(sip-tester baresip tcpdump chromium chromium-driver postgresql)
want=("${APT_RUN[@]}")
[ "$WITH_TEST" = 1 ] && want+=("${APT_TEST[@]}")
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages into .venv (torch 2.13.0 CPU build first, pinned)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e '.[test,ecapa,postgres]'
  # resemblyzer's metadata asks for `webrtcvad`, whose import needs pkg_resources (gone from setuptools 81);
  # webrtcvad-wheels provides the same module, so resemblyzer goes in without its own dependency list.
  .venv/bin/pip install -q --no-deps resemblyzer==0.1.4
  # torchaudio from PyPI is a CUDA build that cannot load next to torch+cpu; without its .so files it falls
  # back to pure Python, which is all SpeechBrain's ECAPA needs.
  ta=$(.venv/bin/python -c 'import importlib.util,os; print(os.path.dirname(importlib.util.find_spec("torchaudio").origin))')
  rm -f "$ta"/lib/*.so
  rm -f .venv/.setup-*
  touch "$stamp"
fi
.venv/bin/python -c 'import torch, resemblyzer, speechbrain, ivr' >/dev/null
echo "setup: ok (.venv ready)"
