"""The actions on a dossier (flows.pipeline.actions), on a real PostgreSQL, a real inbox and a local "SFTP".

Who may do what in which state, and each action carried out through the platform's own path:
a corrected file goes through the inbox and the ingestion; an annulation or an answer is recorded
then sent by the answers batch; a retry puts a dossier `en erreur` back at its step.
"""

from __future__ import annotations

import hashlib
import io
from datetime import date
from pathlib import Path

import pytest

from flows.actes import messages as M
from flows.actes.messages import read_archive
from flows.actes.pdf import encrypt_pdf, minimal_pdf
from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.journal import verify_chain
from flows.dossier.store import ArtefactStore
from flows.pipeline import actions as A
from flows.pipeline import answers
from flows.pipeline.ingest import sweep
from flows.pipeline.prefecture import handle_prefecture_reply
from flows.settings import Settings
from flows.transport.local import LocalEndpoint

COLL = "saint-sever"
SIREN = "214002933"
IDACTE = "040-214002933-20261120-DEL42-DE"
DCOURRIER = date(2026, 11, 24)
PDF = minimal_pdf("Réponse de la commune", "Pièces demandées")
AGENT = frozenset({A.AGENT})
OFFICIAL = frozenset({A.OFFICIAL})
OPERATOR = frozenset({A.OPERATOR})


@pytest.fixture
def settings(demo_settings) -> Settings:
    return demo_settings


@pytest.fixture
def prefecture(tmp_path) -> Path:
    root = tmp_path / "prefecture"
    (root / "depot").mkdir(parents=True)
    return root


def make(settings: Settings, *, flow: str = "actes", state: str = "transmis", sha: str = "a",
         path: tuple[str, ...] = ("valide", "au_parapheur", "signe", "transmis", "acquitte")) -> str:
    """A dossier moved along `path` until `state` (or into a refusal / erreur from there)."""
    with session_scope(settings.database_url) as s:
        d = service.create(s, collectivite=COLL, flow=flow, original_name="acte.zip" if flow == "actes" else "pes.xml",
                           sha256=sha * 64, size=10, doc_type="deliberation" if flow == "actes" else "pes")
        d.run_id = f"dossier__{d.id}"
        for target in path:
            if d.state == state:
                break
            service.transition(s, d, target, message=f"test → {target}")
        if d.state != state:
            service.transition(s, d, state, message=f"test → {state}")
        if flow == "actes":
            d.idacte = IDACTE
        return d.id


def offers(settings: Settings, dossier_id: str, roles: frozenset[str], run_state: str | None = None) -> list[str]:
    with session_scope(settings.database_url) as s:
        f = A.facts(s, service.get(s, dossier_id), run_state=run_state)
        return [o.code for o in A.offers(f, roles)]


def journal(settings: Settings, dossier_id: str):
    with session_scope(settings.database_url) as s:
        return list(service.get(s, dossier_id).journal)


def letter(settings: Settings, kind: str = "3-1", serial: int = 1) -> None:
    name, data = M.build_response_archive([M.build_courrier(kind, IDACTE, date=DCOURRIER)], serial, SIREN, "040",
                                          arrondissement=2)
    with session_scope(settings.database_url) as s:
        handle_prefecture_reply(s, ArtefactStore(settings.store_root), name, data, inbox_root=settings.inbox_root)


def send_batch(settings: Settings, prefecture: Path) -> list[str]:
    r = answers.process_replies(settings, lambda counterpart: LocalEndpoint(prefecture))
    return r.resumed + r.sent  # what the UI/API records is sent as a resumed envoi


def sent(prefecture: Path) -> list[str]:
    return sorted(p.name for p in (prefecture / "depot").iterdir() if not p.name.startswith("."))


def stage(settings: Settings, data: bytes, name: str = "pes-corrige.xml", flow: str = "helios", **kw) -> A.Staged:
    return A.stage_upload(settings, COLL, flow, name, io.BytesIO(data), **kw)


def refused(exc: pytest.ExceptionInfo, kind: str, *words: str) -> A.ActionRefused:
    err = exc.value
    assert err.kind == kind, (err.kind, err.message)
    assert err.message and err.fix
    for w in words:
        assert w in f"{err.message} {err.fix}", (err.message, err.fix)
    return err


# --------------------------------------------------------------------------------------------- who may do what
def test_roles_come_from_the_configuration(settings):
    cfg = settings.config
    assert A.roles_for(cfg, "agent.saintsever", COLL) == AGENT
    assert A.roles_for(cfg, "maire.saintsever", COLL) == OFFICIAL
    assert A.roles_for(cfg, "agent.chalosse", COLL) == frozenset()
    assert A.roles_for(cfg, "operateur", COLL, operators=["operateur"]) == OPERATOR
    assert A.roles_for(cfg, "quelquun", COLL, airflow_role="admin") == OPERATOR
    assert A.roles_for(cfg, "agent.saintsever", "atlantide") == frozenset()


def test_offers_follow_state_and_role(settings):
    pes_refused = make(settings, flow="helios", state="refuse_validation", sha="1", path=())
    assert offers(settings, pes_refused, AGENT) == [A.RESUBMIT]
    assert offers(settings, pes_refused, OFFICIAL) == []
    assert offers(settings, pes_refused, OPERATOR) == [A.RESUBMIT]
    acte = make(settings, state="acquitte", sha="2")
    assert offers(settings, acte, AGENT) == [A.ANNUL, A.PUBLISH]  # acknowledged: publishable (issue 20)
    assert offers(settings, acte, OFFICIAL) == [A.ANNUL]
    assert offers(settings, acte, frozenset()) == []
    stuck = make(settings, flow="helios", state="valide", sha="3", path=())
    assert offers(settings, stuck, OPERATOR, run_state="running") == []
    assert offers(settings, stuck, OPERATOR, run_state=None) == []  # unknown: never guess
    assert offers(settings, stuck, OPERATOR, run_state="failed") == [A.RETRY]
    assert offers(settings, stuck, OPERATOR, run_state=A.RUN_ABSENT) == [A.RETRY]
    assert offers(settings, stuck, AGENT, run_state="failed") == []
    broken = make(settings, flow="helios", state="erreur", sha="4", path=("valide", "au_parapheur", "signe"))
    assert offers(settings, broken, OPERATOR) == [A.RETRY]
    with session_scope(settings.database_url) as s:
        f = A.facts(s, service.get(s, broken))
    assert f.error_from == "signe"
    why = A.refusal(f, A.RETRY, AGENT)
    assert why.kind == "role" and why.status == 403 and "opérateur" in why.message
    why = A.refusal(f, A.ANNUL, AGENT)
    assert why.status == 409 and "n'est pas un acte" in why.message


# --------------------------------------------------------------------------------------------- resubmit
def test_resubmitted_file_goes_through_the_inbox_and_becomes_the_next_version(settings):
    prev = make(settings, flow="helios", state="refuse_validation", sha="b", path=())
    corrected = b"<PES_Aller>corrige</PES_Aller>"
    done = A.resubmit(settings, prev, stage(settings, corrected), actor="Mme Durand", roles=AGENT)
    assert done.created and done.new_dossier_id and "repasse la validation" in done.message
    folder = settings.inbox_root / COLL / "helios"
    assert (folder / "pes-corrige.xml").read_bytes() == corrected
    assert not list(folder.glob(".action-*"))  # the staging file is gone
    entry = journal(settings, prev)[-1]
    assert entry.event == "resoumission" and entry.actor == "Mme Durand" and "Mme Durand" in entry.message
    # the same file again before the ingestion: nothing more
    again = A.resubmit(settings, prev, stage(settings, corrected), actor="Mme Durand", roles=AGENT)
    assert not again.created and again.new_dossier_id == done.new_dossier_id
    assert [p.name for p in folder.iterdir() if p.is_file()] == ["pes-corrige.xml"]

    started = sweep(settings, min_age=0)  # the ordinary ingestion
    assert [s.dossier_id for s in started] == [done.new_dossier_id]
    with session_scope(settings.database_url) as s:
        new = service.get(s, done.new_dossier_id)
        assert new.previous_id == prev and new.version == 2 and new.state == "recu"
        assert [e.event for e in new.journal] == ["reception", "nouvelle_version"]
        assert new.journal[-1].actor == "Mme Durand"
        assert service.get(s, prev).journal[-1].event == "version_suivante"
        assert verify_chain(s).ok
    # and after the ingestion: still idempotent, and no third version on the old dossier
    assert not A.resubmit(settings, prev, stage(settings, corrected), actor="x", roles=AGENT).created
    with pytest.raises(A.ActionRefused) as exc:
        A.resubmit(settings, prev, stage(settings, b"<PES_Aller>v3</PES_Aller>"), actor="x", roles=AGENT)
    refused(exc, "etat", "déjà une version corrigée", done.new_dossier_id)
    assert offers(settings, prev, AGENT) == []


def test_resubmission_refusals_are_precise(settings):
    prev = make(settings, flow="helios", state="rejete_parapheur", sha="c", path=("valide", "au_parapheur"))
    same = b"x" * 10
    with session_scope(settings.database_url) as s:  # the refused dossier's own content
        service.get(s, prev).sha256 = hashlib.sha256(same).hexdigest()
    with pytest.raises(A.ActionRefused) as exc:
        A.resubmit(settings, prev, stage(settings, same), actor="a", roles=AGENT)
    assert refused(exc, "doublon", "identique à celui qui a été refusé").status == 409
    with pytest.raises(A.ActionRefused) as exc:
        A.resubmit(settings, prev, stage(settings, b"<ok/>"), actor="maire", roles=OFFICIAL)
    assert refused(exc, "role").status == 403
    other = make(settings, flow="helios", state="valide", sha="d", path=())
    with pytest.raises(A.ActionRefused) as exc:
        A.resubmit(settings, other, stage(settings, b"<ok/>"), actor="a", roles=AGENT)
    refused(exc, "etat", "Validé", "refusé ou rejeté")
    with pytest.raises(A.ActionRefused) as exc:
        stage(settings, b"%PDF-1.4", name="scan.pdf")
    assert refused(exc, "saisie").field == "fichier"
    with pytest.raises(A.ActionRefused) as exc:
        stage(settings, b"", name="vide.xml")
    assert refused(exc, "saisie", "vide").field == "fichier"
    with pytest.raises(A.ActionRefused) as exc:
        stage(settings, b"y" * 5000, max_bytes=4096)
    assert refused(exc, "taille", "trop volumineux").status == 413
    assert not [p for p in (settings.inbox_root / COLL / "helios").iterdir() if p.is_file()]
    # a plain drop of the same content already waiting in the inbox is a duplicate, not a second version
    (settings.inbox_root / COLL / "helios" / "deja.xml").write_bytes(b"<attente/>")
    with pytest.raises(A.ActionRefused) as exc:
        A.resubmit(settings, prev, stage(settings, b"<attente/>"), actor="a", roles=AGENT)
    refused(exc, "doublon", "attend sa prise en charge")


def test_staged_name_cannot_escape_the_inbox(settings):
    prev = make(settings, flow="helios", state="refuse_validation", sha="e", path=())
    done = A.resubmit(settings, prev, stage(settings, b"<evil/>", name="../../../etc/evil.xml"), actor="a", roles=AGENT)
    assert done.name == "evil.xml" and (settings.inbox_root / COLL / "helios" / "evil.xml").exists()
    assert not (settings.state_dir / "etc").exists()


# --------------------------------------------------------------------------------------------- annulation
def test_annulation_recorded_then_sent_once_by_the_answers_batch(settings, prefecture):
    did = make(settings, state="acquitte", sha="f")
    with pytest.raises(A.ActionRefused) as exc:
        A.request_annulation(settings, did, actor="Mme Durand", roles=AGENT, motif="  ")
    assert refused(exc, "saisie", "motif").field == "motif"
    done = A.request_annulation(settings, did, actor="Mme Durand", roles=AGENT, motif="Acte retiré par le conseil")
    assert done.created and done.name.endswith(".tar.gz")
    entry = journal(settings, did)[-1]
    assert entry.event == "annulation_demandee" and entry.actor == "Mme Durand" and "Acte retiré" in entry.message
    assert sent(prefecture) == []  # recorded, not yet sent
    again = A.request_annulation(settings, did, actor="Mme Durand", roles=AGENT, motif="encore")
    assert not again.created and again.name == done.name
    assert send_batch(settings, prefecture) == [done.name]
    archive = read_archive((prefecture / "depot" / done.name).read_bytes(), done.name)
    assert archive.messages[0].kind == "Annulation" and archive.messages[0].idacte == IDACTE
    assert send_batch(settings, prefecture) == [] and sent(prefecture) == [done.name]
    assert journal(settings, did)[-1].event == "envoi_6-1" and journal(settings, did)[-1].actor == "Mme Durand"
    assert A.ANNUL not in offers(settings, did, AGENT)


def test_annulation_in_the_wrong_state_is_a_409(settings):
    did = make(settings, state="valide", sha="g", path=())
    with pytest.raises(A.ActionRefused) as exc:
        A.request_annulation(settings, did, actor="a", roles=AGENT, motif="m")
    assert refused(exc, "etat", "Validé", "transmis ou acquitté").status == 409
    pes = make(settings, flow="helios", state="transmis", sha="h", path=("valide", "au_parapheur", "signe", "transmis"))
    with pytest.raises(A.ActionRefused) as exc:
        A.request_annulation(settings, pes, actor="a", roles=AGENT, motif="m")
    refused(exc, "etat", "n'est pas un acte")


# --------------------------------------------------------------------------------------------- answer
def test_answer_to_a_demande_de_pieces_is_recorded_sent_and_closes_the_letter(settings, prefecture):
    did = make(settings, state="acquitte", sha="i")
    assert A.ANSWER not in offers(settings, did, AGENT)
    with pytest.raises(A.ActionRefused) as exc:
        A.answer_prefecture(settings, did, actor="a", roles=AGENT, documents=[("a.pdf", PDF)])
    refused(exc, "etat", "aucun courrier")
    letter(settings, "3-1")
    assert offers(settings, did, AGENT) == [A.ANNUL, A.ANSWER, A.PUBLISH]
    with session_scope(settings.database_url) as s:
        f = A.facts(s, service.get(s, did))
    assert [c.code for c in f.letters[0].choices] == ["3-4", "3-3", "3-2"]
    done = A.answer_prefecture(settings, did, actor="Mme Durand", roles=AGENT, documents=[("plan.pdf", PDF)],
                               motif="Plan signé joint")
    assert done.created and "pièces complémentaires" in done.message
    entry = journal(settings, did)[-1]
    assert entry.event == "reponse_agent" and entry.actor == "Mme Durand" and "Plan signé joint" in entry.message
    assert A.ANSWER not in offers(settings, did, AGENT)  # being sent: no second answer
    same = A.answer_prefecture(settings, did, actor="Mme Durand", roles=AGENT, documents=[("plan.pdf", PDF)],
                               motif="Plan signé joint")
    assert not same.created and same.name == done.name
    assert send_batch(settings, prefecture) == [done.name]
    msg = read_archive((prefecture / "depot" / done.name).read_bytes(), done.name).messages[0]
    assert msg.kind == "PieceComplementaire" and msg.date_courrier_pref == DCOURRIER
    last = journal(settings, did)[-1]
    assert last.event == "envoi_3-4" and last.actor == "Mme Durand"
    with session_scope(settings.database_url) as s:
        assert s.query(answers.PrefectureCourrier).one().status == "repondu"
        assert verify_chain(s).ok
    assert A.ANSWER not in offers(settings, did, AGENT)


@pytest.mark.parametrize("reponse, docs, field, words", [
    ("4-4", [("a.pdf", PDF)], "reponse", "ne répond à aucun courrier"),
    ("9-9", [("a.pdf", PDF)], "reponse", "3-4"),
    ("3-2", [("a.pdf", PDF)], "fichiers", "ne porte pas de document"),
    ("3-3", [("a.pdf", PDF), ("b.pdf", PDF)], "fichiers", "exactement un PDF"),
    ("3-4", [], "fichiers", "au moins un PDF"),
    ("3-4", [("chiffre.pdf", encrypt_pdf(PDF))], "fichiers", "non conforme"),
    ("3-4", [("faux.pdf", b"GIF89a pas un pdf")], "fichiers", "non conforme"),
])
def test_bad_answers_name_the_field(settings, prefecture, reponse, docs, field, words):
    did = make(settings, state="acquitte", sha="j")
    letter(settings, "3-1")
    with pytest.raises(A.ActionRefused) as exc:
        A.answer_prefecture(settings, did, actor="a", roles=AGENT, documents=docs, reponse=reponse)
    err = refused(exc, "saisie", words)
    assert err.field == field and err.status == 422
    assert send_batch(settings, prefecture) == []
    with session_scope(settings.database_url) as s:
        assert s.query(answers.ActesEnvoi).count() == 0


def test_answer_documents_are_read_with_a_cap(settings):
    with pytest.raises(A.ActionRefused) as exc:
        A.read_documents([("lettre.docx", io.BytesIO(b"PK word"))])
    assert refused(exc, "saisie", "n'est pas un PDF").field == "fichiers"
    with pytest.raises(A.ActionRefused) as exc:
        A.read_documents([("a.pdf", io.BytesIO(PDF)), ("b.pdf", io.BytesIO(PDF))], max_bytes=len(PDF) + 10)
    assert refused(exc, "taille").status == 413
    assert A.read_documents([("../x/a.pdf", io.BytesIO(PDF))]) == [("a.pdf", PDF)]


def test_ar_without_document_keeps_the_letter_open(settings, prefecture):
    did = make(settings, state="acquitte", sha="k")
    letter(settings, "4-1")
    done = A.answer_prefecture(settings, did, actor="Maire", roles=OFFICIAL, documents=[])  # natural: 4-2
    assert "lettre d'observations (4-2)" in done.message
    send_batch(settings, prefecture)
    assert A.ANSWER in offers(settings, did, OFFICIAL)  # 4-2 acknowledges; 4-4 or 4-3 still expected


# --------------------------------------------------------------------------------------------- retry
def test_retry_puts_an_erreur_back_at_its_step(settings):
    did = make(settings, flow="helios", state="erreur", sha="l", path=("valide", "au_parapheur", "signe"))
    with pytest.raises(A.ActionRefused) as exc:
        A.retry(settings, did, actor="agent", roles=AGENT, run_state="failed")
    refused(exc, "role", "opérateur")
    done = A.retry(settings, did, actor="operateur", roles=OPERATOR, run_state="failed")
    assert done.step == "transmission" and done.state == "signe"
    entry = journal(settings, did)[-1]
    assert entry.event == "relance" and entry.actor == "operateur" and entry.state_to == "signe"
    assert "operateur" in entry.message and "signature et transmission" in entry.message
    # now `signe` with a run that is running again: not stuck any more
    with pytest.raises(A.ActionRefused) as exc:
        A.retry(settings, did, actor="operateur", roles=OPERATOR, run_state="running")
    refused(exc, "etat", "en cours")


def test_retry_of_a_parapheur_error_asks_the_parapheur_again(settings):
    did = make(settings, flow="helios", state="erreur", sha="m", path=("valide", "au_parapheur"))
    done = A.retry(settings, did, actor="operateur", roles=OPERATOR, run_state="failed")
    assert done.state == "valide" and done.step == "parapheur"


def test_retry_of_a_stuck_run_only_journals(settings):
    did = make(settings, flow="helios", state="valide", sha="n", path=())
    done = A.retry(settings, did, actor="operateur", roles=OPERATOR, run_state="failed")
    assert done.step == "parapheur" and done.state == "valide"
    assert journal(settings, did)[-1].event == "relance" and journal(settings, did)[-1].state_to is None
    ok = make(settings, flow="helios", state="transmis", sha="o", path=("valide", "au_parapheur", "signe"))
    with pytest.raises(A.ActionRefused) as exc:
        A.retry(settings, ok, actor="operateur", roles=OPERATOR, run_state="success")
    refused(exc, "etat", "pas d'étape bloquée")


def test_annulation_dag_keeps_the_actions_checks(settings, monkeypatch):
    """The operators' annulation DAG goes through the same checks as the page: no motif, or an acte
    not transmitted, fails the run (no retry) and records nothing."""
    import os
    import sys
    import tempfile

    from airflow.sdk.exceptions import AirflowFailException

    home = tempfile.mkdtemp(prefix="demat-airflow-home-")
    os.environ.setdefault("AIRFLOW_HOME", home)
    os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home}/airflow.db")
    plugins = str(Path(__file__).resolve().parents[3] / "plugins")
    if plugins not in sys.path:
        sys.path.insert(0, plugins)
    from demat_airflow import actes_dags, context

    monkeypatch.setattr(context, "settings", lambda: settings)
    run = actes_dags.build_annulation_dag().get_task("request_annulation").python_callable

    class Run:
        triggering_user_name = "operateur"

    did = make(settings, state="acquitte", sha="q")
    with pytest.raises(AirflowFailException, match="motif"):
        run(params={"dossier_id": did, "motif": "   "}, dag_run=Run())
    valid = make(settings, state="valide", sha="r", path=())
    with pytest.raises(AirflowFailException, match="transmis ou acquitté"):
        run(params={"dossier_id": valid, "motif": "Retrait"}, dag_run=Run())
    assert all(e.event != "annulation_demandee" for e in journal(settings, did) + journal(settings, valid))
