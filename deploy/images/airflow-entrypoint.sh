#!/usr/bin/env bash
# /entrypoint of demat's Debian-built image: the subset of the official apache/airflow image's
# entrypoint that docker-compose.yml relies on (deploy/entrypoint.sh execs it).
#   - waits for the metadata database (CONNECTION_CHECK_MAX_COUNT tries, 0 = no wait);
#   - _AIRFLOW_DB_MIGRATE=true: `airflow db migrate`;
#   - _AIRFLOW_WWW_USER_CREATE=true: the first FAB administrator from _AIRFLOW_WWW_USER_USERNAME /
#     _AIRFLOW_WWW_USER_PASSWORD (read from the environment, never echoed; kept if it exists);
#   - then `bash ...`, `python ...` and `airflow ...` run as given, anything else as `airflow ...`
#     (so `celery worker` is `airflow celery worker`, `scheduler` is `airflow scheduler`).
set -euo pipefail

wait_for_db() {
  local tries=${CONNECTION_CHECK_MAX_COUNT:-20} sleep_s=${CONNECTION_CHECK_SLEEP_TIME:-3} i=0
  [[ "$tries" -gt 0 && -n "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ]] || return 0
  until airflow db check >/dev/null 2>&1; do
    i=$((i + 1))
    if [[ $i -ge $tries ]]; then
      echo "[demat] base Airflow injoignable après $tries essais (AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)" >&2
      exit 1
    fi
    sleep "$sleep_s"
  done
}

wait_for_db
if [[ "${_AIRFLOW_DB_MIGRATE:-false}" == "true" ]]; then
  airflow db migrate
fi
if [[ "${_AIRFLOW_WWW_USER_CREATE:-false}" == "true" ]]; then
  if [[ -z "${_AIRFLOW_WWW_USER_PASSWORD:-}" ]]; then
    echo "[demat] _AIRFLOW_WWW_USER_PASSWORD manquant : renseignez-le dans deploy/demat.env" >&2
    exit 64
  fi
  python - <<'PY'
import os
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
user = os.environ.get("_AIRFLOW_WWW_USER_USERNAME", "admin")
with get_application_builder() as ab:
    sm = ab.sm
    if sm.find_user(username=user):
        print(f"[demat] administrateur {user} : déjà présent")
    elif sm.add_user(user, os.environ.get("_AIRFLOW_WWW_USER_FIRSTNAME", "Airflow"),
                     os.environ.get("_AIRFLOW_WWW_USER_LASTNAME", "Admin"),
                     os.environ.get("_AIRFLOW_WWW_USER_EMAIL", "admin@demat.invalid"),
                     sm.find_role(os.environ.get("_AIRFLOW_WWW_USER_ROLE", "Admin")),
                     os.environ["_AIRFLOW_WWW_USER_PASSWORD"]):
        print(f"[demat] administrateur {user} : créé")
    else:
        raise SystemExit(f"[demat] administrateur {user} non créé")
PY
fi

case "${1:-}" in
  "") exec bash ;;
  bash|python|python3|airflow|sh) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
