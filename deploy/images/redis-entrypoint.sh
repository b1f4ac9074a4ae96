#!/bin/bash
# Debian's redis-server starts in protected mode (loopback only) without a config file; the official
# image does not. Redis here is the Celery broker on the compose project's internal network only.
set -euo pipefail
if [[ "${1:-}" == "redis-server" ]]; then
  shift
  if [[ "$(id -u)" == 0 ]]; then
    exec gosu redis redis-server --protected-mode no --dir /data "$@"
  fi
  exec redis-server --protected-mode no --dir /data "$@"
fi
exec "$@"
