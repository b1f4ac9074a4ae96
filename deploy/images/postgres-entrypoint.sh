#!/bin/bash
# The subset of the official postgres image's entrypoint that docker-compose.yml relies on: on an
# empty data directory, initdb with POSTGRES_USER / POSTGRES_PASSWORD (scram-sha-256, never logged)
# and POSTGRES_DB; then the server as user postgres, listening on the container's network.
set -euo pipefail
if [[ "${1:-}" == "postgres" && "$(id -u)" == 0 ]]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  exec gosu postgres "$0" "$@"
fi
if [[ "${1:-}" == "postgres" && ! -s "$PGDATA/PG_VERSION" ]]; then
  if [[ -z "${POSTGRES_PASSWORD:-}" ]]; then
    echo "[demat-postgres] POSTGRES_PASSWORD manquant : renseignez-le dans deploy/demat.env" >&2
    exit 64
  fi
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb --pgdata="$PGDATA" --username="${POSTGRES_USER:-postgres}" --pwfile="$pwfile" \
         --auth-local=scram-sha-256 --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  {
    echo "listen_addresses = '*'"
    echo "unix_socket_directories = '/var/run/postgresql'"
  } >> "$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  db="${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"
  if [[ "$db" != "postgres" ]]; then
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    PGPASSWORD="$POSTGRES_PASSWORD" psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql \
      -U "${POSTGRES_USER:-postgres}" -d postgres -c "CREATE DATABASE \"${db//\"/\"\"}\""
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  echo "[demat-postgres] base initialisée ($PGDATA)"
fi
exec "$@"
