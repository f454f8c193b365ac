#!/usr/bin/env bash
# The README's main command: set up (idempotent), then `recsys demo` (generate → build-features →
# train → evaluate → serve). Arguments go to the demo, e.g. `bash scripts/demo.sh --no-serve --out /tmp/demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
. scripts/lib.sh
exec "$BIN/recsys" demo "$@"
