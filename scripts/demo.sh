#!/usr/bin/env bash
# One command: install what is missing, then run the server with the demo configuration (SQLite, bundled
# model and prompts). Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/contact-server serve --config config/server.yaml --seed-demo "$@"
