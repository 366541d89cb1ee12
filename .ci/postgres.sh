#!/usr/bin/env bash
# Make PostgreSQL server binaries (initdb, pg_ctl) available for the storage tests.
# tests/pg_server.py finds them on PATH or under /usr/lib/postgresql/*/bin and starts a
# throwaway server itself; this script only installs them when they are missing.
set -euo pipefail

have_initdb() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null 2>&1
}

if have_initdb; then
    echo "postgres.sh: PostgreSQL binaries present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "postgres.sh: initdb missing and not root; install PostgreSQL or set QX_TEST_POSTGRES_URL" >&2
    exit 1
fi

echo "postgres.sh: installing PostgreSQL with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null

if ! have_initdb; then
    echo "postgres.sh: PostgreSQL installed but initdb still not found" >&2
    exit 1
fi
# the Debian package creates the 'postgres' user that pg_server.py runs the server as
id postgres >/dev/null
echo "postgres.sh: PostgreSQL binaries installed"
