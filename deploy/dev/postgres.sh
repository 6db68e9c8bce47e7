#!/usr/bin/env bash
# PostgreSQL for the test suite, from Debian's packages, on 127.0.0.1:5432.
#
# Makes HEADWAY_TEST_POSTGRES_URL's default reachable:
#     postgresql+asyncpg://postgres@127.0.0.1:5432/test
# Idempotent and quick when a server already answers: it then only makes sure the `test`
# database exists. Otherwise it installs the `postgresql` package when it is missing, lets the
# user `postgres` in from loopback without a password (a development/CI cluster only), tunes
# the cluster for many short-lived test databases, and starts it.
#
#     deploy/dev/postgres.sh          # install if needed, start, create `test`
#     deploy/dev/postgres.sh stop     # stop the cluster this script starts
set -euo pipefail

HOST=127.0.0.1
PORT=5432
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

log() { echo "postgres.sh: $*" >&2; }

answers() {  # the URL the tests use answers a query
  psql "postgresql://postgres@$HOST:$PORT/postgres" -Atqc 'select 1' >/dev/null 2>&1
}

ensure_test_database() {
  if [ "$(psql "postgresql://postgres@$HOST:$PORT/postgres" -Atqc \
      "select 1 from pg_database where datname = 'test'")" != "1" ]; then
    psql "postgresql://postgres@$HOST:$PORT/postgres" -qc 'create database test' >/dev/null
    log "created database test"
  fi
}

cluster_version() {  # the newest PostgreSQL server (not just a client) from Debian's packages
  local bin
  for bin in /usr/lib/postgresql/*/bin/postgres; do
    [ -x "$bin" ] && basename "$(dirname "$(dirname "$bin")")"
  done | sort -n | tail -n 1
}

install_packages() {
  log "installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q postgresql >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q postgresql >/dev/null
  }
}

configure_cluster() {  # $1 = major version; the Debian cluster "main"
  local version=$1 conf=/etc/postgresql/$1/main
  if [ ! -d "$conf" ]; then
    $SUDO pg_createcluster "$version" main --port "$PORT" >/dev/null
  fi
  local hba=$conf/pg_hba.conf marker="# headway: trust loopback (deploy/dev/postgres.sh)"
  if ! $SUDO grep -qF "$marker" "$hba"; then
    # first matching line wins: these go above Debian's scram-sha-256 lines
    $SUDO sed -i "1i $marker\nhost all postgres $HOST/32 trust\nhost all postgres ::1/128 trust" "$hba"
  fi
  # a test cluster: many databases created and dropped, several workers per test
  $SUDO tee "$conf/conf.d/headway-tests.conf" >/dev/null <<EOF
# written by deploy/dev/postgres.sh for the test suite
listen_addresses = '$HOST'
port = $PORT
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

stop() {
  local version
  version=$(cluster_version)
  [ -n "$version" ] && $SUDO pg_ctlcluster "$version" main stop 2>/dev/null || true
}

start() {
  if answers; then
    ensure_test_database
    return
  fi
  command -v pg_ctlcluster >/dev/null 2>&1 && [ -n "$(cluster_version)" ] || install_packages
  local version
  version=$(cluster_version)
  [ -n "$version" ] || { log "no PostgreSQL server installed under /usr/lib/postgresql"; exit 1; }
  configure_cluster "$version"
  # restart, so a cluster that was already running picks up the port and the trust lines
  $SUDO pg_ctlcluster "$version" main stop >/dev/null 2>&1 || true
  $SUDO pg_ctlcluster "$version" main start
  for _ in $(seq 1 100); do
    answers && break
    sleep 0.1
  done
  answers || { log "PostgreSQL $version did not answer on $HOST:$PORT"; exit 1; }
  ensure_test_database
  log "PostgreSQL $version serving on $HOST:$PORT"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
