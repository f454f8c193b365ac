#!/usr/bin/env bash
# The README's test command: set up (idempotent), then the whole suite. Arguments go to pytest,
# e.g. `bash scripts/test.sh tests/unit` or `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
. scripts/lib.sh
exec "$PY" -m pytest -q "$@"
