"""The State's refusals through the running platform (issue 18): the counterparts judge on their own
(official schemas, their own signature verifier and trust store, their own rules and state), so a
file demat lets through can still be refused, and the dossier must say why, in French.

- PES that demat lets through (transmitted as dropped by an automatic circuit) but Hélios refuses: signed
  by a certificate the DGFiP does not trust (demat checks a signature's integrity, not its trust), a
  bordereau total that differs from its lines (a warning for demat), a budget Hélios has not opened; each
  ends "Refusé par la DGFiP" with the PES_ACQUIT explained. A bordereau altered after signing is caught
  by demat itself before sending (the DGFiP's own verifier refuses it too: tests/unit/simulators);
- an acte whose matière is not in the classification the préfecture published ends with the anomaly;
- the annulation of an acte the préfecture never received is refused, and the dossier says so;
- the DGFiP down while dossiers are in flight: each is sent once when it is back, and each dossier
  said what it waited for.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest
import requests

from flows.dossier import service
from flows.dossier.db import session_scope
from simulators.counterparts import Ledger
from tests.e2e.test_walking_skeleton import _collectivite, _configured

pytestmark = pytest.mark.e2e


def _automatic(data: dict) -> None:
    """Saint-Sever's PES go without any step and without demat's signature (transmitted as dropped);
    its actes are signed automatically with the mayor's certificate (detached XAdES): no one to answer,
    so these tests need no call to Airflow's API while the machine is loaded."""
    circuits = _collectivite(data, "saint-sever")["circuits"]
    circuits["pes"] = [{"kind": "AUTO"}]
    circuits["acte"] = [{"kind": "AUTO", "official": "maire"}]


def _wait_final(platform, shas: list[str], *, timeout: float) -> dict[str, str]:
    """sha256 -> dossier id once every dossier is in a final state (read from demat's database)."""
    from flows.dossier import states

    def final():
        with session_scope(platform.database_url) as session:
            found = {sha: service.by_sha(session, sha) for sha in shas}
            done = all(d is not None and states.is_final(d.state) for d in found.values())
            return done and {sha: d.id for sha, d in found.items()}

    def explain():
        with session_scope(platform.database_url) as session:
            return {sha[:8]: (d.state, d.waiting_reason) if (d := service.by_sha(session, sha)) else "absent"
                    for sha in shas}

    return platform.wait(final, time.monotonic() + timeout, "dossiers final", explain=explain)


def _retrying(call, attempts: int = 5):
    """An API call on a loaded machine: retried on a timeout (the call is idempotent here)."""
    for i in range(attempts):
        try:
            return call()
        except requests.RequestException:
            if i == attempts - 1:
                raise
            time.sleep(5)
    return None


def _api_dossier(platform, dossier_id: str) -> dict:
    token = requests.post(f"{platform.base_url}/auth/token", timeout=20, json={
        "username": "agent.saintsever", "password": platform.secrets["passwords"]["agent.saintsever"]}).json()
    return requests.get(f"{platform.base_url}/demat/api/v1/dossiers/{dossier_id}", timeout=20,
                        headers={"Authorization": f"Bearer {token['access_token']}"}).json()


def _ledger(platform, name: str) -> Ledger:
    return Ledger(platform.state / "simulators" / name / "ledger.sqlite")


def _sign(pki, pes: bytes, who: str = "maire-saint-sever") -> bytes:
    from flows.signature.xades import sign_pes

    password = (pki / f"{who}.pass").read_bytes().strip()
    return sign_pes(pes, pki / f"{who}.p12", password, role="Maire", place="Saint-Sever")


def test_pes_refused_by_the_dgfip_end_refused_with_the_acquit_explained(platform, tmp_path):
    from flows.config import load_config
    from flows.helios.generate import generate_pes
    from flows.signature.pki import create_demo_pki

    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("saint-sever")
    stamp = datetime.now(UTC).strftime("%H%M%S")
    ident = dict(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol, codbud=coll.helios.codbud)
    stranger = tmp_path / "pki-inconnue"  # a CA of the same names that the DGFiP has never heard of
    create_demo_pki(stranger, [("maire-saint-sever", "Claire Dupré", "Maire")], ca_key_size=2048)
    signed = _sign(platform.state / "pki", generate_pes(**ident, nomfic=f"PES_ALT_{stamp}", n_bordereaux=2, seed=11))
    altered = signed.replace(b"Location de mat", b"Locution de mat", 1)
    assert altered != signed
    files = {
        "altered": altered,  # demat refuses it itself, before sending
        "stranger": _sign(stranger, generate_pes(**ident, nomfic=f"PES_CA_{stamp}", n_bordereaux=2, seed=14)),
        # demat only warns about a bordereau total that differs from its lines; Hélios refuses it
        "cumul": generate_pes(**ident, nomfic=f"PES_CUMUL_{stamp}", defects=("mtbordht_mismatch",), seed=12),
        # a budget Hélios has not opened for the collectivité: demat does not know Hélios' referential
        "budget": generate_pes(**{**ident, "codbud": "07"}, nomfic=f"PES_BUD_{stamp}", seed=13),
    }
    with _configured(platform, _automatic):
        shas = {k: platform.drop(coll.slug, "helios", f"pes-{k}-{stamp}.xml", data) for k, data in files.items()}
        ids = _wait_final(platform, list(shas.values()), timeout=600)
    with session_scope(platform.database_url) as session:
        d = service.get(session, ids[shas["altered"]])
        assert d.state == "refuse_validation", (d.state, d.reason)
        assert "modifié après la signature" in d.reason, d.reason
        assert d.transmission_name is None
    assert not [r for r in _ledger(platform, "dgfip").receptions() if f"PES_ALT_{stamp}" in r["name"]]
    expected = {
        "stranger": ("ERREUR_CERTIFICAT", "autorité de confiance"),
        "cumul": ("ERREUR_CUMUL_MONTANTS", "MtBordHT"),
        "budget": ("ERREUR_CODE_COLLECTIVITE_BUDGET", "CodBud 07"),
    }
    for key, (code, words) in expected.items():
        with session_scope(platform.database_url) as session:
            d = service.get(session, ids[shas[key]])
            assert d.state == "refuse_etat", (key, d.state, d.reason)
            refusal = next(e for e in d.journal if e.event == "PES_ACQUIT")
            assert "refusé par la DGFiP" in refusal.message and code in refusal.message, refusal.message
            assert words in refusal.message, refusal.message
            assert service.artefact(d, "acquit") is not None
            transmitted = d.transmission_name
            signed_by_demat = service.artefact(d, "signed")
        assert signed_by_demat is None  # the automatic circuit sent the file as dropped
        assert _ledger(platform, "dgfip").count(transmitted) == 1
        seen = _retrying(lambda key=key: _api_dossier(platform, ids[shas[key]]))
        assert seen["libelle"] == "Refusé par la DGFiP (PES_ACQUIT)" and seen["final"] is True, seen
        assert code in seen["motif"], seen["motif"]
    with session_scope(platform.database_url) as session:
        message = next(e.message for e in service.get(session, ids[shas["stranger"]]).journal if e.event == "PES_ACQUIT")
    # the acquit names each bordereau whose signature it refused, with the domain and the code
    for n in (1, 2):
        assert re.search(rf"signature du bordereau \(DomaineAck 3\), bordereau {n}\b", message), message


def test_acte_refused_by_the_prefecture_ends_with_the_anomaly_explained(platform):
    """demat cannot verify levels 3-5 of the classification (it only warns); the préfecture checks the
    matière against the classification it published and answers an AnomalieActe."""
    from flows.actes.generate import generate_acte_zip
    from flows.config import load_config

    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("saint-sever")
    stamp = datetime.now(UTC).strftime("%H%M%S")
    acte = generate_acte_zip(collectivite=coll, numero=f"MAT{stamp}", nature="DE", matiere="5.2.9",
                             objet="Délibération sur une matière inconnue de la préfecture")
    with _configured(platform, _automatic):
        sha = platform.drop(coll.slug, "actes", f"acte-matiere-{stamp}.zip", acte)
        d_id = _wait_final(platform, [sha], timeout=600)[sha]
    with session_scope(platform.database_url) as session:
        d = service.get(session, d_id)
        assert d.state == "refuse_etat", (d.state, d.reason)
        anomaly = next(e for e in d.journal if e.event == "AnomalieActe")
        assert "5.2.9" in anomaly.message and "classification" in anomaly.message, anomaly.message
        assert anomaly.details.get("nature") == "001"
        # the mayor's detached XAdES went with it, and the préfecture's own verifier found nothing to say
        assert service.artefact(d, "signature") is not None
        assert "Signature" not in anomaly.message, anomaly.message
        transmitted = d.transmission_name
    assert _ledger(platform, "prefecture").count(transmitted) == 1
    assert "5.2.9" in _retrying(lambda: _api_dossier(platform, d_id))["motif"]


def test_annulation_of_an_acte_the_prefecture_never_received_is_refused(platform):
    """The acte is lost on its way (the préfecture's scenario hook): the dossier stays transmitted; its
    annulation reaches a préfecture that has no such acte, which refuses it; the dossier says so."""
    from flows.actes.generate import generate_acte_zip
    from flows.config import load_config
    from tests.e2e.test_actes_answers import _events, _trigger

    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("saint-sever")
    stamp = datetime.now(UTC).strftime("%H%M%S")
    acte = generate_acte_zip(collectivite=coll, numero=f"PERDU{stamp}", nature="DE", matiere="5.2",
                             objet="Délibération perdue en route [simulateur:perdu]")
    deadline = time.monotonic() + 600

    def transmitted():
        with session_scope(platform.database_url) as session:
            d = service.by_sha(session, sha)
            return d is not None and d.state == "transmis" and d.idacte and (d.id, d.transmission_name, d.idacte)

    with _configured(platform, _automatic):
        sha = platform.drop(coll.slug, "actes", f"acte-perdu-{stamp}.zip", acte)
        d_id, transmission, idacte = platform.wait(transmitted, deadline, "acte transmitted")
    platform.wait(lambda: _ledger(platform, "prefecture").count(transmission) == 1, deadline, "acte received")
    outcome = next(r["outcome"] for r in _ledger(platform, "prefecture").receptions() if r["name"] == transmission)
    assert "perdu" in outcome

    _retrying(lambda: _trigger(platform, "demat_actes_annulation",
                               {"dossier_id": d_id, "motif": "Acte retiré par le conseil"}))

    def refused():
        events = _events(platform, d_id)
        return any(e == "AnomalieEnveloppe" for e, _, _ in events) and events

    events = platform.wait(refused, deadline, "annulation sent and refused by the préfecture")
    message = next(m for e, _, m in events if e == "AnomalieEnveloppe")
    assert "jamais été reçu" in message and idacte in message, message
    assert "annulation" in message.lower()
    with session_scope(platform.database_url) as session:
        d = service.get(session, d_id)
        assert d.state == "transmis", d.state  # not "annulé": the préfecture refused
    annulations = [r for r in _ledger(platform, "prefecture").receptions() if "Annulation refusée" in r["outcome"]]
    assert len(annulations) == 1, annulations


@pytest.mark.slow
def test_dgfip_down_then_back_each_pes_sent_once_and_each_dossier_says_what_it_waited_for(platform):
    """The DGFiP refuses every connection while 20 PES are in flight, for long enough to span several
    retries; when it is back each file is received exactly once and every dossier's journal says that
    it waited for the DGFiP."""
    from flows.config import load_config
    from flows.helios.generate import generate_pes

    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("saint-sever")
    stamp = datetime.now(UTC).strftime("%H%M%S")
    ident = dict(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol, codbud=coll.helios.codbud)
    down = platform.state / "simulators" / "dgfip" / "DOWN"
    down.touch()
    try:
        with _configured(platform, _automatic):
            shas = [platform.drop(coll.slug, "helios", f"pes-panne-{stamp}-{i}.xml",
                                  generate_pes(**ident, nomfic=f"PES_PANNE_{stamp}_{i}", seed=100 + i))
                    for i in range(20)]
            deadline = time.monotonic() + 400  # within the test timeout (900 s) with the wait below

            def all_waiting():
                with session_scope(platform.database_url) as session:
                    found = [service.by_sha(session, s) for s in shas]
                    return all(d is not None and d.waiting_reason for d in found) and [d.id for d in found]

            ids = platform.wait(all_waiting, deadline, "every dossier waiting for the DGFiP")
            assert not [r for r in _ledger(platform, "dgfip").receptions() if "PES_PANNE" in r["name"]]
            down.unlink()
            _wait_final(platform, shas, timeout=450)
    finally:
        down.unlink(missing_ok=True)
    ledger = _ledger(platform, "dgfip")
    with session_scope(platform.database_url) as session:
        for d_id in ids:
            d = service.get(session, d_id)
            assert d.state == "archive", (d.id, d.state, d.reason)
            assert ledger.count(d.transmission_name) == 1, d.transmission_name
            waits = [e.message for e in d.journal if e.event == "attente"]
            assert waits and any("DGFiP" in w or "dgfip" in w.lower() for w in waits), waits
