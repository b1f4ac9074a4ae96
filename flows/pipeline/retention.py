"""Which Airflow runs demat no longer needs: the runs of dossiers that reached a final state.

The dossier (its states, journal, artefacts and proofs) is demat's own permanent record, kept in
demat's database and store; the Airflow run only carries the dossier through its steps. Once the
dossier is final (archivé, refusé, annulé, en erreur: a retry re-creates the run) its run can
go, which keeps Airflow's tables, and the scheduler's queries over them, small. This module
decides; the Airflow adapter (plugins/demat_airflow/retention.py) deletes.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from flows.dossier import states
from flows.dossier.db import session_scope
from flows.dossier.models import Dossier
from flows.settings import Settings

RUN_PREFIX = "dossier__"


def dossier_id_of(run_id: str) -> str | None:
    """The dossier a run carries (runs are named by flows.pipeline.ingest.run_id_for), else None."""
    return run_id[len(RUN_PREFIX):] if run_id.startswith(RUN_PREFIX) else None


def disposable_runs(settings: Settings, run_ids: Iterable[str]) -> set[str]:
    """The run ids, among these, whose dossier is final. Unknown dossiers and other runs are kept."""
    by_dossier = {d: r for r in run_ids if (d := dossier_id_of(r))}
    if not by_dossier:
        return set()
    with session_scope(settings.database_url) as session:
        rows = session.execute(select(Dossier.id, Dossier.state).where(Dossier.id.in_(list(by_dossier)))).all()
    return {by_dossier[i] for i, state in rows if states.is_final(state)}
