#!/bin/sh
# PostgreSQL and Redis from Debian's packages, for the scale-path tests (`make test`).
# Idempotent: starts what is not running, creates the crossedge role once and the test
# database anew.
# Both listen on 127.0.0.1 only. Prints the two URLs as shell assignments.
set -eu
PG_VERSION=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '$4 == "online"' | grep -q .; then
  pg_lsclusters -h | grep -q . || pg_createcluster "$PG_VERSION" main >/dev/null
  pg_ctlcluster "$PG_VERSION" main start
fi
PG_PORT=$(pg_lsclusters -h | awk '$4 == "online" {print $3; exit}')
psql_admin() { su postgres -c "psql -p $PG_PORT -tAc \"$1\""; }
psql_admin "SELECT 1 FROM pg_roles WHERE rolname='crossedge'" | grep -q 1 ||
  psql_admin "CREATE ROLE crossedge LOGIN PASSWORD 'crossedge' CREATEDB" >/dev/null
# A fresh database each run: one left by an earlier run may hold another version's schema.
psql_admin "DROP DATABASE IF EXISTS crossedge_test WITH (FORCE)" >/dev/null
psql_admin "CREATE DATABASE crossedge_test OWNER crossedge" >/dev/null
REDIS_PORT=${CROSSEDGE_TEST_REDIS_PORT:-6379}
if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
  i=0; until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 50 ] || exit 1; sleep 0.1; done
fi
echo "CROSSEDGE_TEST_DATABASE_URL=postgres://crossedge:crossedge@127.0.0.1:$PG_PORT/crossedge_test"
echo "CROSSEDGE_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
