"""The dossier DAGs' task ids, shared by the DAG factory and the UI's relaunch action.

Kept apart from operators.py so the UI (running in the API server) names the tasks without
importing Airflow's operators.
"""

VALIDATE_TASK = "validate"
PARAPHEUR_PREFIX = "parapheur"  # parapheur_1 … parapheur_N, one per circuit step
SIGN_TASK = "sign_and_transmit"
AUTOMATIC_TASK = "automatic_circuit"  # validate signed and transmitted itself: the circuit has no human step


def step_task_id(step: int) -> str:
    return f"{PARAPHEUR_PREFIX}_{step}"
