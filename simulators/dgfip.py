"""The DGFiP (Hélios) gateway: PES_Aller in depot/, PES_ACQUIT named ACQUIT_<file name> in retour/.

The naming follows the reference pair PESALR2_….xml / ACQUIT_PESALR2_….xml. Hélios judges on
its own (simulators.helios_rules: the official schema when available, its own signature
verifier and trust store, its own referential and tiers rules, what it already integrated) and
answers a PES_ACQUIT built here, in the official acquit's shape: DomaineAck 0 for the whole
flux, 3 per bordereau signature, 4 per PJ, 5/6 per bordereau with DetailPiece/DetailLigne, the
NumAnoAck codes of CommunAck.xsd.

Settings.extra:
    trust_store     list of PEM paths (CA certificates Hélios accepts); empty = every signature
                    is refused with ERREUR_CERTIFICAT
    collectivites   [{siret, idpost, codcol, codbud}, ...]: the budgets open in Hélios (run.py
                    fills it from the platform configuration); absent = any collectivité
    memoire_bordereaux  (default True) refuse a bordereau (collectivité, budget, exercice, type,
                    number) integrated by an earlier file, as Hélios does. run.py turns it off for
                    the embedded platform: flows.helios.generate numbers every file's bordereaux
                    from 1, so demo and test files would all collide (--set dgfip.memoire_bordereaux=true)
`refuse_rate` adds a simulated refusal to a valid file.
"""

from __future__ import annotations

import logging
from datetime import date

from lxml import etree

from simulators import xmlsig
from simulators.counterparts import Decision, Incoming, Reply
from simulators.helios_rules import NS_ALLER, BordResult, Err, Judgement, judge

log = logging.getLogger(__name__)

NS_ACQUIT = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/retour/v2"
__all__ = ["NS_ACQUIT", "NS_ALLER", "acquit_name", "build_acquit", "dgfip_rules"]


def acquit_name(name: str) -> str:
    return f"ACQUIT_{name}"


def trust_store(settings) -> xmlsig.TrustStore:
    return xmlsig.trust_from_settings(settings)


def registry(settings) -> dict[str, dict] | None:
    colls = settings.extra.get("collectivites")
    if colls is None:
        return None
    out: dict[str, dict] = {}
    for c in colls:
        entry = out.setdefault(str(c["siret"]), {"idpost": str(c.get("idpost") or ""), "budgets": set()})
        entry["budgets"].add((str(c.get("codcol") or ""), str(c.get("codbud") or "")))
    return out


# -- the PES_ACQUIT -----------------------------------------------------------------------------


def _sub(parent, tag: str, value: str | None = None):
    el = etree.SubElement(parent, tag)
    if value is not None:
        el.set("V", value)
    return el


def _errors(parent, errors: list[Err]) -> None:
    for e in errors[:100]:
        err = _sub(parent, "Erreur")
        _sub(err, "NumAnoAck", e.code)
        _sub(err, "LibelleAnoAck", e.libelle)


def _fit(value: str, ok, fallback: str) -> str:
    return value if value and ok(value) else fallback


def build_acquit(j: Judgement, *, today: date | None = None) -> bytes:
    """The PES_ACQUIT of a judgement (valid against PES_V2_Acquit_Autonome_V2.xsd)."""
    h = j.header
    root = etree.Element(f"{{{NS_ACQUIT}}}PES_ACQUIT", nsmap={"n": NS_ACQUIT})
    env = _sub(root, "Enveloppe")
    params = _sub(env, "Parametres")
    _sub(params, "Version", "2")
    _sub(params, "TypFic", _fit(h.get("TypFic", ""), lambda s: len(s) <= 32, "PESALR2"))
    _sub(params, "NomFic", _fit(h.get("NomFic", ""), lambda s: len(s) <= 100, "INCONNU"))
    em = _sub(env, "Emetteur")
    _sub(em, "Sigle", "HELIOS")
    _sub(em, "Adresse", "DGFiP simulateur demat")
    _sub(_sub(env, "Recepteur"), "Sigle", "DEMAT")
    head = _sub(root, "EnTetePES")
    _sub(head, "DteStr", (today or date.today()).isoformat())
    _sub(head, "IdPost", _fit(h.get("IdPost", ""), lambda s: len(s) <= 7 and s.isalnum(), "999999"))
    _sub(head, "IdColl", _fit(h.get("IdColl", ""), lambda s: s.isdigit() and len(s) <= 14, "0"))
    _sub(head, "CodCol", _fit(h.get("CodCol", ""), lambda s: s.isdigit() and len(s) == 3 and s != "000", "999"))
    _sub(head, "CodBud", _fit(h.get("CodBud", ""), lambda s: s.isdigit() and len(s) == 2, "99"))
    _sub(head, "LibelleColBud", _fit(h.get("LibelleColBud", ""), lambda s: len(s) <= 38, "INCONNU"))
    acq = _sub(root, "ACQUIT")
    _sub(_sub(acq, "EnTeteAcquit"), "IdVer", "2")
    if j.flux:  # nothing of the file is integrated
        el = _sub(acq, "ElementACQUIT")
        _sub(el, "DomaineAck", "0")
        _sub(el, "EtatAck", "0")
        _errors(el, j.flux)
        return _bytes(root)
    for b in j.bordereaux:
        if b.signed or b.signature:
            _bordereau_element(acq, b, "3", not b.signature, b.signature)
        refused = not b.accepted
        errors = b.errors + ([Err(b.signature[0].code, "8399", "Bordereau non intégré : sa signature est refusée")]
                             if b.signature else [])
        el = _bordereau_element(acq, b, b.domaine, not refused, errors)
        for p in b.pieces.values():
            if not (p.errors or any(p.lignes.values())):
                continue
            dp = _sub(el, "DetailPiece")
            _sub(dp, "NumPiece", p.numpiece)
            _errors(dp, p.errors)
            for lnum, errs in p.lignes.items():
                dl = _sub(dp, "DetailLigne")
                _sub(dl, "NumLigne", lnum)
                _errors(dl, errs)
    for uid, errs in j.pjs:
        el = _sub(acq, "ElementACQUIT")
        _sub(el, "DomaineAck", "4")
        _sub(el, "EtatAck", "0" if errs else "1")
        if uid and len(uid) <= 50:
            _sub(el, "IdUnique", uid)
        _errors(el, errs)
    if not acq.findall("ElementACQUIT"):
        el = _sub(acq, "ElementACQUIT")
        _sub(el, "DomaineAck", "0")
        _sub(el, "EtatAck", "1")
    return _bytes(root)


def _bordereau_element(acq, b: BordResult, domaine: str, accepted: bool, errors: list[Err]):
    el = _sub(acq, "ElementACQUIT")
    _sub(el, "DomaineAck", domaine)
    _sub(el, "EtatAck", "1" if accepted else "0")
    _sub(el, "NumBord", b.numbord[:7])
    if b.exercice.isdigit() and len(b.exercice) == 4:
        _sub(el, "ExerciceBord", b.exercice)
    _errors(el, errors)
    return el


def _bytes(root) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="ISO-8859-1", pretty_print=True)


# -- the rules ----------------------------------------------------------------------------------


def dgfip_rules(incoming: Incoming) -> Decision:
    settings = incoming.settings
    if incoming.too_large:
        j = Judgement(flux=[Err("ERREUR_TAILLE_BORDEREAUX", "8000",
                                f"Fichier de plus de {settings.max_bytes // (1024 * 1024)} Mio : au-delà de la "
                                "taille acceptée par Hélios")])
        return Decision([Reply(acquit_name(incoming.name), build_acquit(j, today=incoming.day))],
                        "PES_ACQUIT refusé : fichier trop volumineux")
    j = judge(incoming.data, trust=trust_store(settings), registry=registry(settings), known=incoming.known,
              remember_bordereaux=bool(settings.extra.get("memoire_bordereaux", True)))
    if j.accepted and j.bordereaux and incoming.rng.random() < settings.refuse_rate:
        j.bordereaux[0].errors.append(Err("ERREUR_AUTRE", "8999", "Refus simulé par Hélios (taux de refus configuré)"))
    acquit = build_acquit(j, today=incoming.day)
    h = j.header
    errors = j.all_errors()
    nomfic = h.get("NomFic", "")
    if j.accepted:
        outcome = "PES_ACQUIT accepté"
    else:
        outcome = f"PES_ACQUIT refusé ({len(errors)} anomalie(s) : {errors[0].code} {errors[0].libelle})"
    facts = []
    if j.accepted and nomfic:  # integrated: its NomFic and its bordereaux cannot come again
        facts.append(f"nomfic:{h['IdColl']}:{nomfic}")
        facts += [b.key(h["IdColl"], h["CodCol"], h["CodBud"]) for b in j.bordereaux]
    return Decision([Reply(acquit_name(incoming.name), acquit, note=outcome)],
                    f"{outcome} pour {nomfic or incoming.name}", facts)
