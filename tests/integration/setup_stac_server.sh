#!/usr/bin/env bash
# Install what the integration tests' local STAC API needs; skips whatever is already there.
#   system : PostgreSQL 15 + PostGIS 3 (Debian packages; PostgreSQL 15 itself is on the image)
#   python : stac-fastapi-pgstac, pypgstac and uvicorn in their own venv (.venv-stac), so the
#            server's pins never move the project's own dependencies.
# Usage: tests/integration/setup_stac_server.sh   (from anywhere; needs root for apt-get)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${HARVEST_STAC_VENV:-$REPO/.venv-stac}"
PYTHON="${PYTHON:-python3}"
STAC_FASTAPI_PGSTAC="stac-fastapi-pgstac==7.2.0"
PYPGSTAC="pypgstac[psycopg]==0.10.0"
UVICORN="uvicorn>=0.30"

if [ ! -f /usr/share/postgresql/15/extension/postgis.control ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "PostGIS for PostgreSQL 15 is missing; run as root: apt-get install postgresql-15-postgis-3" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql-15-postgis-3 >/dev/null
    echo "installed postgresql-15-postgis-3"
fi

stamp="$VENV/.stac-server-stamp"
want="$STAC_FASTAPI_PGSTAC $PYPGSTAC $UVICORN"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
    || [ ! -x "$VENV/bin/pypgstac" ] || [ ! -x "$VENV/bin/uvicorn" ]; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "$STAC_FASTAPI_PGSTAC" "$PYPGSTAC" "$UVICORN"
    echo "$want" > "$stamp"
    echo "installed the STAC server packages into $VENV"
fi
