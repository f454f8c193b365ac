#!/usr/bin/env bash
# Set up a fresh clone (idempotent: a second run changes nothing and takes seconds):
#   1. redis-server, which the test fixtures start privately (apt-get, only when missing);
#   2. torch==2.13.0 FIRST: anything that depends on torch would otherwise pull a multi-GB CUDA build;
#   3. this project, editable, with the dev and loadtest extras;
#   4. with RECSYS_SPARK=1 (CI sets it): also the spark extra, and a Java 17+ runtime for Spark 4
#      (apt-get, only when `java` is missing or older).
# Installs into the active virtualenv if there is one, else into python3.11 (override: PYTHON=...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib.sh

"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || {
  log "error: Python 3.11 is required, $PY is $("$PY" --version 2>&1) (fix: PYTHON=/path/to/python3.11 $0)"
  exit 2
}

if ! command -v redis-server >/dev/null 2>&1; then
  log "installing redis-server with apt-get"
  sudo=""
  [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi

extras="dev,loadtest"
if [[ "${RECSYS_SPARK:-0}" == 1 ]]; then
  extras="$extras,spark"
  if ! java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; then
    log "installing a Java runtime with apt-get (Spark 4 needs Java 17 or 21)"
    sudo=""
    [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openjdk-17-jre-headless >/dev/null 2>&1 \
      || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openjdk-21-jre-headless >/dev/null
  fi
fi

torch_version() { "$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true; }
torch="$(torch_version)"
if [[ "$torch" != "2.13.0" ]]; then
  log "installing torch==2.13.0 (found: ${torch:-none})"
  "$PY" -m pip install -q "torch==2.13.0"
  torch="$(torch_version)"
fi

# Skip the (slow) editable install when this interpreter already imports the project from THIS
# folder and pyproject.toml has not changed since the last install (-I: the cwd does not count).
mkdir -p build
stamp="build/setup-$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.prefix.encode()).hexdigest()[:12])').sha256"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
here="$("$PY" -I -c 'import pathlib, recsys.spec as m; print(pathlib.Path(m.__file__).resolve().parents[1])' 2>/dev/null || true)"
if [[ "$here" != "$(pwd -P)" || ! -x "$BIN/recsys" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "installing this project (editable) with the [$extras] extras"
  "$PY" -m pip install -q -e ".[$extras]"
  echo "$want" > "$stamp"
fi
log "ready: $("$PY" --version), torch $torch, redis-server $(redis-server --version | cut -d' ' -f3 | tr -d v=)"
