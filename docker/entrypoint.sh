#!/bin/sh
# Runs keeperd from its virtual environment as PID 1's only child, so SIGTERM reaches it.
set -eu
VENV="${KEEPERD_VENV:-/opt/keeperd/.venv}"
if [ ! -x "$VENV/bin/keeperd" ]; then
  echo "keeperd-entrypoint: no keeperd in $VENV (set KEEPERD_VENV)" >&2
  exit 127
fi
exec "$VENV/bin/keeperd" "$@"
