"""The DGFiP (Hélios) gateway: PES_Aller in depot/, PES_ACQUIT named ACQUIT_<file name> in retour/.

The naming follows the reference pair PESALR2_….xml / ACQUIT_PESALR2_….xml. Validation uses
flows.helios.validate.validate_pes and flows.quality.gate.run_tiers_gate when they are
importable, with the NomFic of files already accepted as `known_nomfics` (a NomFic is unique
per collectivité); otherwise structural checks. The acquit comes from
flows.helios.acquit.build_acquit(pes, findings), or a minimal builder here.
`refuse_rate` adds a simulated refusal to a valid file. Settings.extra `tiers_gate` (default
True) runs the tiers quality gate; it costs tens of seconds per file today, turn it off
(`--set dgfip.tiers_gate=false`) for fast demos.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from lxml import etree

from flows import xmlsafe
from flows.findings import Finding
from simulators.counterparts import Decision, Incoming, Reply

log = logging.getLogger(__name__)

NS_ALLER = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller"
NS_ACQUIT = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/retour/v2"


def acquit_name(name: str) -> str:
    return f"ACQUIT_{name}"


def _v(root: etree._Element | None, path: str) -> str:
    if root is None:
        return ""
    el = root.find(path)
    return el.get("V", "") if el is not None else ""


def structural_findings(data: bytes) -> tuple[list[Finding], etree._Element | None]:
    try:
        root = xmlsafe.parse_bytes(data)
    except (etree.XMLSyntaxError, ValueError) as exc:
        return [Finding("ERREUR_SCHEMA_INCOMPLET", f"Fichier PES illisible : {exc}", layer="lecture")], None
    found = []
    if etree.QName(root).localname != "PES_Aller" or etree.QName(root).namespace != NS_ALLER:
        found.append(Finding("ERREUR_SCHEMA_INCOMPLET", f"Racine « {etree.QName(root).localname} » au lieu de PES_Aller",
                             layer="xsd"))
    if not _v(root, "Enveloppe/Parametres/NomFic"):
        found.append(Finding("ERREUR_SCHEMA_INCOMPLET", "NomFic absent (Enveloppe/Parametres/NomFic)", layer="xsd"))
    for tag in ("IdPost", "IdColl", "CodCol", "CodBud"):
        if not _v(root, f"EnTetePES/{tag}"):
            found.append(Finding("ERREUR_SCHEMA_INCOMPLET", f"EnTetePES/{tag} absent", layer="xsd"))
    return found, root


def validate(data: bytes, name: str, known_nomfics: set[str], *, tiers_gate: bool = True) -> tuple[list[Finding], str]:
    """Blocking findings and the NomFic read, through flows.helios / flows.quality when available."""
    try:
        from flows.helios.validate import validate_pes
    except ImportError:
        validate_pes = None
    if validate_pes is None:
        found, root = structural_findings(data)
        nomfic = _v(root, "Enveloppe/Parametres/NomFic")
        if nomfic and nomfic in known_nomfics:
            found.append(Finding("ERREUR_DOUBLON_FICHIER", f"NomFic « {nomfic} » déjà reçu", value=nomfic))
        return found, nomfic
    with tempfile.TemporaryDirectory(prefix="dgfip-") as tmp:
        path = Path(tmp) / (Path(name).name or "pes.xml")
        path.write_bytes(data)
        report = validate_pes(path, known_nomfics=known_nomfics)
        findings = list(report.errors)
        nomfic = str(report.summary.get("nomfic") or "")
        try:
            from flows.quality.gate import run_tiers_gate
        except ImportError:
            run_tiers_gate = None
        if tiers_gate and run_tiers_gate is not None and report.ok:
            result = run_tiers_gate(path, engine="auto")  # GE states the refusals pandas found: same findings
            findings += [f for f in result.findings if getattr(f, "severity", "error") == "error"]
    return findings, nomfic


def build_acquit(pes: bytes, findings: list[Finding]) -> bytes:
    try:
        from flows.helios.acquit import build_acquit as real
    except ImportError:
        return minimal_acquit(pes, findings)
    return real(pes, findings)


def minimal_acquit(pes: bytes, findings: list[Finding]) -> bytes:
    """A PES_ACQUIT: one technical element, accepted (EtatAck 1) or refused with the findings."""
    try:
        src = xmlsafe.parse_bytes(pes)
    except (etree.XMLSyntaxError, ValueError):
        src = None
    root = etree.Element(f"{{{NS_ACQUIT}}}PES_ACQUIT", nsmap={"n": NS_ACQUIT})

    def sub(parent, tag, v=None):
        el = etree.SubElement(parent, tag)
        if v is not None:
            el.set("V", v)
        return el

    env = sub(root, "Enveloppe")
    params = sub(env, "Parametres")
    sub(params, "Version", "2")
    sub(params, "TypFic", _v(src, "Enveloppe/Parametres/TypFic") or "PESALR2")
    sub(params, "NomFic", _v(src, "Enveloppe/Parametres/NomFic") or "INCONNU")
    sub(sub(env, "Emetteur"), "Sigle", "HELIOS")
    sub(sub(env, "Recepteur"), "Sigle", "DEMAT")
    head = sub(root, "EnTetePES")
    for tag in ("DteStr", "IdPost", "IdColl", "CodCol", "CodBud", "LibelleColBud"):
        sub(head, tag, _v(src, f"EnTetePES/{tag}"))
    acq = sub(root, "ACQUIT")
    sub(sub(acq, "EnTeteAcquit"), "IdVer", "2")
    el = sub(acq, "ElementACQUIT")
    sub(el, "DomaineAck", "0")
    sub(el, "EtatAck", "0" if findings else "1")
    for i, f in enumerate(findings[:50], 1):
        err = sub(el, "Erreur")
        sub(err, "NumAnoAck", f.rule if f.rule.startswith("ERREUR_") else "ERREUR_AUTRE")
        sub(err, "LibelleAnoAck", f"{i:04d} - {f.message}"[:250])
    return etree.tostring(root, xml_declaration=True, encoding="ISO-8859-1", pretty_print=True)


def dgfip_rules(incoming: Incoming) -> Decision:
    if incoming.too_large:
        findings = [Finding("ERREUR_TAILLE", "Fichier au-delà de la taille maximale acceptée par Hélios (128 Mo)")]
        return Decision([Reply(acquit_name(incoming.name), minimal_acquit(b"", findings))], "refusé : trop volumineux")
    known = {k.removeprefix("nomfic:") for k in _known_nomfics(incoming)}
    findings, nomfic = validate(incoming.data, incoming.name, known,
                                tiers_gate=bool(incoming.settings.extra.get("tiers_gate", True)))
    if not findings and incoming.rng.random() < incoming.settings.refuse_rate:
        findings = [Finding("ERREUR_AUTRE", "Refus simulé par Hélios (taux de refus configuré)", layer="simulation")]
    acquit = build_acquit(incoming.data, findings)
    outcome = "PES_ACQUIT accepté" if not findings else f"PES_ACQUIT refusé ({len(findings)} anomalie(s) : {findings[0].rule})"
    facts = [f"nomfic:{nomfic}"] if nomfic and not findings else []
    return Decision([Reply(acquit_name(incoming.name), acquit, note=outcome)], f"{outcome} pour {nomfic or incoming.name}", facts)


def _known_nomfics(incoming: Incoming) -> list[str]:
    """The ledger answers one key at a time; the rules only need to know about this file's NomFic."""
    try:
        root = xmlsafe.parse_bytes(incoming.data)
    except (etree.XMLSyntaxError, ValueError):
        return []
    nomfic = _v(root, "Enveloppe/Parametres/NomFic")
    return [f"nomfic:{nomfic}"] if nomfic and incoming.known(f"nomfic:{nomfic}") else []
