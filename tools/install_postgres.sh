#!/usr/bin/env bash
# Installs what the database tests start: Debian's postgresql (the server binaries initdb and
# pg_ctl; the tests run a throw-away server on 127.0.0.1 for Optuna's storage and MLflow's
# backend store). Does nothing if they are there. Needs root and apt-get (as on CI and the
# project's machines); elsewhere it says what to do.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing postgresql (for the database tests)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -q postgresql >/dev/null; }
  exit 0
fi
echo "install_postgres: the PostgreSQL server (initdb, pg_ctl) is missing; install it (Debian:" \
     "sudo apt-get install postgresql) for the database tests" >&2
exit 1
