#!/usr/bin/env bash
# One command on a fresh machine: a virtualenv with cartstream and its dependencies, a
# PostgreSQL answering on 127.0.0.1:5432 (trust auth, database `test`) if none does yet, and
# Debian's chromium for the console's browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
# torch is pinned so that pip takes the CPU build; GPU machines add the `gpu` extra.
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
# every other version as the tests last passed with (a new release can change results)
.venv/bin/pip install -q --disable-pip-version-check -c scripts/constraints.txt -e '.[dev]'
echo "setup: cartstream $(.venv/bin/python -c 'import cartstream; print(cartstream.__version__)') installed in .venv"

pg_answers() { .venv/bin/python - <<'PY' 2>/dev/null
import psycopg, sys
try:
    psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2).close()
except Exception:
    sys.exit(1)
PY
}

if pg_answers; then
  echo "setup: PostgreSQL answers on 127.0.0.1:5432"
else
  BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$BIN" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing PostgreSQL from Debian packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  [ -n "$BIN" ] || { echo "setup: no PostgreSQL found; install PostgreSQL 15+ and rerun" >&2; exit 1; }
  DATA="$PWD/.cartstream/pgdata"
  AS=()
  if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    mkdir -p "$DATA"
    [ "$(id -u)" = 0 ] && chown postgres "$DATA"
    "${AS[@]}" "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
  fi
  "${AS[@]}" "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w start \
    -o "-p 5432 -k $DATA -c listen_addresses=127.0.0.1"
  echo "setup: started PostgreSQL in $DATA (stop: $BIN/pg_ctl -D $DATA stop)"
fi
.venv/bin/python - <<'PY'
import psycopg
with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'test'").fetchone():
        conn.execute("CREATE DATABASE test")
print("setup: database `test` ready")
PY
# a real browser for the console's browser test (Playwright drives Debian's chromium: browser
# downloads are not possible everywhere, so `playwright install` is not used)
if command -v chromium >/dev/null; then
  echo "setup: chromium found ($(command -v chromium))"
elif command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "setup: installing chromium from Debian packages"
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
    || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null))
else
  echo "setup: no chromium and not root: the console's browser test will fail; install chromium" >&2
fi
touch .venv/.cartstream-setup
echo "setup: done. Next: ./scripts/cartstream demo"
