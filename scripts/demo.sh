#!/usr/bin/env bash
# The README's main command: set up (idempotent), then `recsys demo` (generate → build-features →
# train → evaluate → serve). Arguments go to the demo, e.g. `bash scripts/demo.sh --no-serve --out /tmp/demo`;
# a relative --out is relative to where you run it from.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/setup.sh"
. "$here/lib.sh"
exec "$BIN/recsys" demo "$@"
