"""`airflow standalone`, keeping demat's auth manager (python -m embedded.standalone).

Airflow's standalone command forces SimpleAuthManager on the components it starts, whatever
[core] auth_manager says. demat's embedded default needs its own (demat_airflow.auth_manager:
Airflow's UI and API for operators only, issue 14), so this runs the same command with the
configured auth manager handed to the scheduler, dag-processor, triggerer and API server.
Everything else (what it starts, how it stops) is Airflow's.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    from airflow.cli.commands.standalone_command import StandaloneCommand
    from airflow.configuration import write_default_airflow_configuration_if_needed

    wanted = os.environ.get("AIRFLOW__CORE__AUTH_MANAGER", "").strip()

    class DematStandalone(StandaloneCommand):
        def calculate_env(self) -> dict[str, str]:
            env = super().calculate_env()
            if wanted:
                env["AIRFLOW__CORE__AUTH_MANAGER"] = wanted
                os.environ["AIRFLOW__CORE__AUTH_MANAGER"] = wanted
                self.print_output("standalone", f"demat: auth manager kept: {wanted}")
            return env

    write_default_airflow_configuration_if_needed()
    DematStandalone().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
