#!/usr/bin/env bash
# Install the TACO reader the export tests read harvest's exports back with, in its own venv
# (.venv-taco): tacoreader 2.4.21 calls DuckDB's fetch_arrow_table, which DuckDB 2 removed, and
# harvest itself needs DuckDB 2 (stac-geoparquet), so the reader gets its own duckdb<2.
# Usage: tests/integration/setup_taco_reader.sh   (from anywhere; skips what is there)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${HARVEST_TACO_VENV:-$REPO/.venv-taco}"
PYTHON="${PYTHON:-python3}"
WANT="tacoreader==2.4.21 duckdb>=1.3.2,<2"

stamp="$VENV/.taco-reader-stamp"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$WANT" ] || [ ! -x "$VENV/bin/python" ]; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "tacoreader==2.4.21" "duckdb>=1.3.2,<2"
    echo "$WANT" > "$stamp"
    echo "installed the TACO reader into $VENV"
fi
