#!/usr/bin/env bash
# One command: install what is missing (SIPp, baresip, chromium, PostgreSQL, Python packages), start a
# throw-away PostgreSQL, and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
source scripts/pg-test-server.sh
pg_test_start
trap pg_test_stop EXIT
set +e
.venv/bin/python -m pytest -p no:cacheprovider -q "$@"
rc=$?
set -e
exit $rc
