"""Prints Airflow's metadata database URL built from POSTGRES_* (as deploy/entrypoint.sh does).

docker-compose.yml sets AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD to `python <this file>`: Airflow uses
it only where AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not set, i.e. in the healthchecks Docker runs
with `docker exec` (`airflow jobs check`), which do not go through the entrypoint. The password comes
from the container's environment (deploy/demat.env) and is printed to Airflow only, never logged.
"""

import os
import sys
from urllib.parse import quote

password = os.environ.get("POSTGRES_PASSWORD")
if not password:
    sys.exit("POSTGRES_PASSWORD absent : renseignez-le dans deploy/demat.env")
print(f"postgresql+psycopg2://{quote(os.environ.get('POSTGRES_USER', 'airflow'), safe='')}:{quote(password, safe='')}"
      f"@{os.environ.get('POSTGRES_HOST', 'postgres')}:{os.environ.get('POSTGRES_PORT', '5432')}"
      f"/{os.environ.get('POSTGRES_DB', 'airflow')}", end="")  # Airflow keeps a trailing newline
