# Shared by the scripts in this folder (sourced, not run): which Python to use, and logging.
# The interpreter is $PYTHON if set, else the active virtualenv's, else python3.11, else python3,
# so every script installs into and runs from the same environment.

log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PY="$VIRTUAL_ENV/bin/python"
elif command -v python3.11 >/dev/null 2>&1; then
  PY=python3.11
else
  PY=python3
fi

# Console scripts (recsys, locust) live beside the interpreter, whatever is first on PATH.
BIN="$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))')"
