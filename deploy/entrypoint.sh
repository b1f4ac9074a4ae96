#!/usr/bin/env bash
# demat image entrypoint: database URLs from POSTGRES_* (the password comes from the env file,
# never from docker-compose.yml), then Airflow's official /entrypoint (DB wait, migrate, user, exec).
# A URL already set in the environment (an external managed PostgreSQL) is left untouched.
set -euo pipefail
# the state volumes hold the tiers' IBANs (store), inboxes, logs and mails: owner only (every demat
# container runs as the same AIRFLOW_UID)
umask 0077

if [[ -n "${POSTGRES_PASSWORD:-}" ]]; then
  _pw=$(python -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "${POSTGRES_PASSWORD}")
  _user=${POSTGRES_USER:-airflow}
  _hostport="${POSTGRES_HOST:-postgres}:${POSTGRES_PORT:-5432}"
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-postgresql+psycopg2://${_user}:${_pw}@${_hostport}/${POSTGRES_DB:-airflow}}"
  export AIRFLOW__CELERY__RESULT_BACKEND="${AIRFLOW__CELERY__RESULT_BACKEND:-db+postgresql://${_user}:${_pw}@${_hostport}/${POSTGRES_DB:-airflow}}"
  export DEMAT_DATABASE_URL="${DEMAT_DATABASE_URL:-postgresql+psycopg2://${_user}:${_pw}@${_hostport}/${DEMAT_DB:-demat}}"
  unset _pw
fi
# the nightly retention task reaches Airflow's own database through this (Airflow 3 hides
# AIRFLOW__DATABASE__SQL_ALCHEMY_CONN from task processes)
if [[ -n "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ]]; then
  export DEMAT_AIRFLOW_DATABASE_URL="${DEMAT_AIRFLOW_DATABASE_URL:-${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN}}"
fi
if [[ -z "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" && "${1:-}" != "python" ]]; then
  echo "[demat] ni POSTGRES_PASSWORD ni AIRFLOW__DATABASE__SQL_ALCHEMY_CONN : copiez deploy/demat.env.example en deploy/demat.env" >&2
  exit 64
fi
exec /entrypoint "$@"
