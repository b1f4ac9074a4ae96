"""After the ARActe: stamped acte and receipt as new artefacts; publication and the public listing (PostgreSQL)."""

from __future__ import annotations

import io
from datetime import date

import pytest
import yaml
from pypdf import PdfReader

from flows.actes import messages as M
from flows.actes.generate import generate_acte_zip
from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.store import ArtefactStore
from flows.pipeline import publication as P
from flows.pipeline.prefecture import handle_prefecture_reply
from flows.settings import REPO, Settings

COLL = "saint-sever"
SIREN = "214002933"


@pytest.fixture
def settings(tmp_path, demat_db, monkeypatch) -> Settings:
    state = tmp_path / "state"
    config = yaml.safe_load((REPO / "flows" / "config" / "demo.yaml").read_text())
    for c in config["collectivites"]:
        if c["slug"] == COLL:
            c["publication_auto"] = ["AR"]  # arrêtés réglementaires published once acknowledged
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    monkeypatch.setenv("DEMAT_CONFIG", str(path))
    return Settings(state_dir=state, config_path=path, database_url=demat_db, store_root=str(state / "store"),
                    inbox_root=state / "inbox", pki_dir=state / "pki", reference_dir=tmp_path)


def make_acte(settings: Settings, numero: str, nature: str = "DE", objet: str = "Tarifs de la cantine",
              state: str = "transmis") -> tuple[str, str]:
    coll = settings.config.collectivite(COLL)
    data = generate_acte_zip(collectivite=coll, numero=numero, nature=nature, objet=objet,
                             date_decision=date(2026, 11, 20))
    store = ArtefactStore(settings.store_root)
    sha = store.put(data)
    idacte = f"040-{SIREN}-20261120-{numero}-{nature}"
    with session_scope(settings.database_url) as s:
        d = service.create(s, collectivite=COLL, flow="actes", original_name=f"{numero}.zip", sha256=sha,
                           size=len(data), doc_type="")
        for target in ("valide", "signe", "transmis"):
            if d.state == state:
                break
            service.transition(s, d, target, message=f"test → {target}")
        d.idacte, d.siren, d.transmitted_at = idacte, SIREN, service.now()
        return d.id, idacte


def acknowledge(settings: Settings, idacte: str, serial: int = 1) -> list[str]:
    name, data = M.build_response_archive([M.build_aracte(idacte, date(2026, 11, 21), date(2024, 1, 15))], serial,
                                          SIREN, "040", arrondissement=2)
    with session_scope(settings.database_url) as s:
        return handle_prefecture_reply(s, ArtefactStore(settings.store_root), name, data,
                                       inbox_root=settings.inbox_root)


def artefacts(settings: Settings, dossier_id: str) -> dict[str, bytes]:
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as s:
        d = service.get(s, dossier_id)
        return {a.kind: store.get(a.sha256) for a in d.artefacts}


def events(settings: Settings, dossier_id: str) -> list[str]:
    with session_scope(settings.database_url) as s:
        return [e.event for e in service.get(s, dossier_id).journal]


def _stamp_text(pdf: bytes) -> str:
    page = PdfReader(io.BytesIO(pdf)).pages[0]
    return " ".join(ref.get_object()["/Contents"] for ref in page.get("/Annots", []))


def test_aracte_produces_the_stamped_acte_and_the_receipt_once(settings):
    dossier_id, idacte = make_acte(settings, "DEL42")
    assert acknowledge(settings, idacte) == [dossier_id]
    arts = artefacts(settings, dossier_id)
    assert "Reçu en préfecture le 21/11/2026" in _stamp_text(arts[P.STAMPED]) and idacte in _stamp_text(arts[P.STAMPED])
    receipt = PdfReader(io.BytesIO(arts[P.RECEIPT])).pages[0].extract_text()
    assert idacte in receipt and "Tarifs de la cantine" in receipt and "Délibération" in receipt
    assert "Reçu en préfecture le : 21/11/2026" in receipt
    assert P.STAMPED_PUBLISHED not in arts  # a délibération is not auto-published in this configuration
    acknowledge(settings, idacte, serial=2)  # the same ARActe again: nothing new
    with session_scope(settings.database_url) as s:
        kinds = [a.kind for a in service.get(s, dossier_id).artefacts]
    assert kinds.count(P.STAMPED) == 1 and kinds.count(P.RECEIPT) == 1
    with session_scope(settings.database_url) as s:
        entry = [e for e in service.get(s, dossier_id).journal if e.event == "ARActe"][0]
        assert entry.details["acte_tamponne"] == ["tamponne-acte_DEL42.pdf", f"accuse-reception-{idacte}.pdf"]


def test_publication_journaled_listed_and_idempotent(settings):
    published_id, idacte = make_acte(settings, "DEL43", objet="Budget 100% (primitif)")
    hidden_id, hidden_idacte = make_acte(settings, "DEL44", objet="Budget secret non publié")
    waiting_id, _ = make_acte(settings, "DEL45", objet="Budget pas encore reçu")
    acknowledge(settings, idacte)
    acknowledge(settings, hidden_idacte, serial=2)
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as s:
        row, created = P.publish(s, store, service.get(s, published_id), actor="agent1", config=settings.config,
                                 on=date(2026, 11, 25))
        assert created and row.published_on == date(2026, 11, 25)
        with pytest.raises(P.NotPublishable, match="accusé réception"):
            P.publish(s, store, service.get(s, waiting_id), actor="agent1", config=settings.config)
    with session_scope(settings.database_url) as s:
        again, created = P.publish(s, store, service.get(s, published_id), actor="agent2", config=settings.config)
        assert not created and again.published_on == date(2026, 11, 25) and again.actor == "agent1"
    assert events(settings, published_id).count("publication") == 1
    stamped = artefacts(settings, published_id)[P.STAMPED_PUBLISHED]
    assert "Publié le 25/11/2026" in _stamp_text(stamped)
    with session_scope(settings.database_url) as s:
        total, rows = P.public_list(s, COLL)
        assert total == 1 and [r.idacte for r in rows] == [idacte]  # never the acknowledged-but-unpublished one
        assert P.public_list(s, COLL, objet="100%")[0] == 1
        assert P.public_list(s, COLL, objet="secret")[0] == 0
        assert P.public_list(s, COLL, objet="%")[0] == 1  # a wildcard is a character, not "everything"
        assert P.public_list(s, COLL, nature="AR")[0] == 0
        assert P.public_list(s, COLL, du=date(2026, 11, 26))[0] == 0
        assert P.public_list(s, COLL, au=date(2026, 11, 25))[0] == 1
        assert P.public_list(s, "cc-chalosse-tursan")[0] == 0
        assert P.public_list(s, COLL, limit=10**9)[0] == 1


def test_configured_natures_are_published_once_acknowledged(settings):
    dossier_id, idacte = make_acte(settings, "ARR7", nature="AR", objet="Stationnement rue des Arènes")
    acknowledge(settings, idacte)
    assert "publication" in events(settings, dossier_id)
    with session_scope(settings.database_url) as s:
        P.ensure_schema(s)
        row = s.get(P.Publication, dossier_id)
        assert row is not None and row.nature == "AR" and row.actor.startswith("demat")
    assert "Publié le" in _stamp_text(artefacts(settings, dossier_id)[P.STAMPED_PUBLISHED])


def test_a_dossier_without_its_pdf_keeps_its_acknowledgment(settings):
    """No readable acte behind the dossier: the ARActe is applied, the missing stamp journaled in French."""
    with session_scope(settings.database_url) as s:
        d = service.create(s, collectivite=COLL, flow="actes", original_name="x.zip", sha256="b" * 64, size=1,
                           doc_type="")
        for target in ("valide", "signe", "transmis"):
            service.transition(s, d, target, message="test")
        d.idacte = f"040-{SIREN}-20261120-X1-DE"
        dossier_id = d.id
    acknowledge(settings, f"040-{SIREN}-20261120-X1-DE")
    with session_scope(settings.database_url) as s:
        d = service.get(s, dossier_id)
        assert d.state == "acquitte"
        note = [e for e in d.journal if e.event == "tampon_impossible"]
        assert note and "ARActe" in note[0].message and "/tmp" not in note[0].message  # no server path


def test_publish_action_checks_role_and_state(settings):
    from flows.pipeline import actions

    dossier_id, idacte = make_acte(settings, "DEL60")
    with pytest.raises(actions.ActionRefused) as early:
        actions.publish(settings, dossier_id, actor="agent1", roles=frozenset({actions.AGENT}))
    assert early.value.kind == "etat" and "accusé réception" in early.value.message
    acknowledge(settings, idacte)
    with pytest.raises(actions.ActionRefused) as who:
        actions.publish(settings, dossier_id, actor="elu1", roles=frozenset({actions.OFFICIAL}))
    assert who.value.kind == "role" and who.value.status == 403
    with session_scope(settings.database_url) as s:
        f = actions.facts(s, service.get(s, dossier_id))
    assert [o.code for o in actions.offers(f, frozenset({actions.AGENT}))].count(actions.PUBLISH) == 1
    done = actions.publish(settings, dossier_id, actor="agent1", roles=frozenset({actions.AGENT}))
    assert done.created and "publié" in done.message
    again = actions.publish(settings, dossier_id, actor="agent1", roles=frozenset({actions.AGENT}))
    assert not again.created
    with session_scope(settings.database_url) as s:
        f = actions.facts(s, service.get(s, dossier_id))
    assert f.published and actions.PUBLISH not in [o.code for o in actions.offers(f, frozenset({actions.AGENT}))]
