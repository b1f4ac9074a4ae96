"""The préfecture (contrôle de légalité, @ctes) as the platform sees it through SFTP.

Receives TDT-EACT--SIREN--AAAAMMJJ-n.tar.gz archives in depot/, answers tar.gz archives in
retour/ (see simulators.actes_wire for names and codes):
- Acte (1-1): AnomalieEnveloppe when the archive or envelope is broken; AnomalieActe (1-3) when
  the acte is invalid (schema via flows.actes when available, else structural checks; date in
  the future, NumeroInterne, Objet, nature, classification date, missing files, IDActe already
  transmitted); otherwise ARActe (1-2). `refuse_rate` turns a valid acte into an AnomalieActe;
  `later_rate` adds, after `later_delay`, a CourrierSimple (2-1), DemandePieceComplementaire
  (3-1) or LettreObservations (4-1).
- Annulation (6-1) -> ARAnnulation (6-2); DemandeClassification (7-1) -> RetourClassification
  (7-2); RefusPieceComplementaire / PieceComplementaire (3-3 / 3-4) -> ARPieceComplementaire
  (3-5); RejetLettreObservations / ReponseLettreObservations (4-3 / 4-4) ->
  ARReponseRejetLettreObservations (4-5); ReponseCourrierSimple (2-2) and the collectivité's ARs
  (3-2, 4-2) are recorded without answer.

Anomaly natures used by this simulator (the official list is not public; keep them as data):
AnomalieActe 001 invalid acte, 002 classification not current (the one attested nature),
003 IDActe already transmitted, 004 announced file missing, 005 refused (simulated odds);
AnomalieEnveloppe as labelled in flows.actes.messages: 001 envelope or form not conforming,
003 announced file missing, 004 unreadable archive, 005 too large, 100 unexpected message.

Messages are built by flows.actes.messages (build_aracte, build_anomalie_acte,
build_anomalie_enveloppe, build_courrier, build_ar_for, build_response_archive) when
importable, else by simulators.actes_wire (an independent writer of the same messages).
Reading uses actes_wire (it must tell the AnomalieEnveloppe natures apart).

Settings.extra: `classification_date` (ISO date; the acte's ClassificationDateVersion must equal
it; None = not checked).
"""

from __future__ import annotations

import logging
import re
from datetime import date

from lxml import etree

from simulators import actes_wire as W
from simulators.counterparts import Decision, Incoming, Reply

log = logging.getLogger(__name__)

NUMERO_RE = re.compile(r"^([A-Z0-9][A-Z0-9_]{0,13})?[A-Z0-9]$")
NATURE_ABBR = {"1": "DE", "2": "AR", "3": "AI", "4": "CC", "5": "BF", "6": "AU"}
LATER_KINDS = ("CourrierSimple", "DemandePieceComplementaire", "LettreObservations")
AR_FOR = {
    "RefusPieceComplementaire": "ARPieceComplementaire",
    "PieceComplementaire": "ARPieceComplementaire",
    "RejetLettreObservations": "ARReponseRejetLettreObservations",
    "ReponseLettreObservations": "ARReponseRejetLettreObservations",
}
NO_ANSWER = {"ReponseCourrierSimple", "ARDemandePieceComplementaire", "ARLettreObservations"}
# Scenario hook (tests, demo): an acte whose Objet contains "[simulateur:3-1]" (2-1, 3-1 or 4-1, several
# separated by commas) gets that letter for sure, `forced_delay` seconds (Settings.extra, default 5) after its AR.
FORCED_RE = re.compile(r"\[simulateur:\s*([0-9]-1(?:\s*,\s*[0-9]-1)*)\s*\]")
FORCED_KINDS = {"2-1": "CourrierSimple", "3-1": "DemandePieceComplementaire", "4-1": "LettreObservations"}


# -- adapters to flows.actes (lazy: the simulator runs even if that module is not ready) -------


def schema_problems(message: etree._Element) -> list[str] | None:
    """XSD errors from flows.actes (project schema), or None if it is not available."""
    try:
        from flows.actes.xmlutil import schema_errors
    except ImportError:
        return None
    try:
        return schema_errors(message)
    except (OSError, etree.XMLSchemaParseError) as exc:  # schema not ready yet
        log.warning("schéma @ctes du projet indisponible (%s) : contrôles structurels seulement", exc)
        return None


def retour_classification(day: date) -> bytes:
    try:
        from flows.actes.classification import build_retour_classification, national_default
    except ImportError:
        return W.build_retour_classification_minimal(day)
    return build_retour_classification(national_default(day))


# -- checks ---------------------------------------------------------------------------------------


def structural_problems(acte: etree._Element) -> list[str]:
    problems = []
    for a in ("Date", "NumeroInterne", "CodeNatureActe"):
        if not W.attr(acte, a):
            problems.append(f"attribut actes:{a} absent")
    for el in ("CodeMatiere1", "CodeMatiere2", "Objet", "ClassificationDateVersion", "Document"):
        if acte.find(W.q(el)) is None:
            problems.append(f"élément actes:{el} absent")
    return problems


def acte_problems(r: W.Received, today: date, classification: date | None) -> list[tuple[str, str]]:
    """(AnomalieActe nature, French detail) for every fault; empty when the acte is acceptable."""
    acte = r.message
    assert acte is not None
    found: list[tuple[str, str]] = []
    xsd = schema_problems(acte)
    for p in (xsd if xsd is not None else structural_problems(acte))[:5]:
        found.append(("001", f"Formulaire non conforme : {p}"))
    try:
        decided = date.fromisoformat(W.attr(acte, "Date"))
        if decided > today:
            found.append(("001", f"La date de décision {decided.isoformat()} est dans le futur."))
    except ValueError:
        found.append(("001", f"Date de décision illisible : « {W.attr(acte, 'Date')} »."))
    numero = W.attr(acte, "NumeroInterne")
    if not NUMERO_RE.match(numero):
        found.append(("001", f"Numéro interne « {numero} » non conforme (majuscules, chiffres, _ ; 15 caractères au plus)."))
    objet = (acte.findtext(W.q("Objet")) or "").strip()
    if not objet or len(objet) > 499 or "\n" in objet:
        found.append(("001", "Objet absent, de plus de 499 caractères ou sur plusieurs lignes."))
    nature = NATURE_ABBR.get(W.attr(acte, "CodeNatureActe"))
    if nature is None:
        found.append(("001", f"Code nature d'acte inconnu : « {W.attr(acte, 'CodeNatureActe')} »."))
    elif r.idacte and not r.idacte.endswith(f"-{nature}"):
        found.append(("001", f"La nature {nature} ne correspond pas à l'IDActe {r.idacte}."))
    if r.idacte and r.siren and f"-{r.siren}-" not in r.idacte:
        found.append(("001", f"L'IDActe {r.idacte} ne porte pas le SIREN de l'émetteur {r.siren}."))
    declared = (acte.findtext(W.q("ClassificationDateVersion")) or "").strip()
    if classification is not None and declared != classification.isoformat():
        found.append((
            "002",
            f"Votre acte a été transmis avec une date de classification qui n'est pas à jour ({declared or 'absente'} "
            f"au lieu de {classification.isoformat()}) : demandez la classification (7-1) puis renvoyez l'acte.",
        ))
    names = [(e.text or "").strip() for e in acte.iter(W.q("NomFichier"))]
    missing = [n for n in names if n and n not in r.files]
    if missing:
        found.append(("004", f"Pièce(s) annoncée(s) mais absente(s) de l'archive : {', '.join(missing)}."))
    annexes = acte.find(W.q("Annexes"))
    if annexes is not None:
        declared_count = W.attr(annexes, "Nombre")
        real = len(annexes.findall(W.q("Annexe")))
        if declared_count and declared_count != str(real):
            found.append(("001", f"Annexes/@Nombre vaut {declared_count} mais {real} annexe(s) sont listées."))
    return found


# -- the rules ------------------------------------------------------------------------------------


def _messages():
    """flows.actes.messages when importable (the platform's own builders), else None."""
    try:
        from flows.actes import messages
    except ImportError:
        return None
    return messages


class _Out:
    """Builds the reply archives of one reception (one archive per message, distinct serials).

    Messages come from flows.actes.messages builders when importable, from actes_wire otherwise.
    """

    def __init__(self, incoming: Incoming, r: W.Received):
        self.incoming, self.r = incoming, r
        self.day = incoming.day
        self.n = 0
        self.m = _messages()

    def _archive(self, name: str, xml: bytes, documents: dict[str, bytes], *, delay: float | None, note: str) -> Reply:
        self.n += 1
        serial = self.incoming.reception_id * 10 + self.n
        r = self.r
        dpt = r.departement or "000"
        arr = r.arrondissement or "0"
        siren = r.siren or "000000000"
        if self.m is not None:
            message = self.m.PrefMessage(note.split()[0], name, xml, dict(documents))
            archive_name, data = self.m.build_response_archive(
                [message], serial, siren, dpt, arrondissement=int(arr) if arr.isdigit() else 0, day=self.day,
            )
        else:
            archive_name, data = W.response_archive(dpt, arr, siren, self.day, serial, name, xml, documents)
        return Reply(archive_name, data, delay=delay, note=note)

    def aracte(self, classification: date) -> Reply:
        r = self.r
        if self.m is not None:
            pm = self.m.build_aracte(r.idacte, self.day, classification, acte_message=r.message_bytes)
            return self._archive(pm.name, pm.xml, pm.documents, delay=None, note="ARActe")
        xml = W.build_aracte(r.idacte, self.day, r.message, classification)
        return self._archive(W.message_name(r.idacte, "ARActe"), xml, {}, delay=None, note="ARActe")

    def anomalie_acte(self, nature: str, detail: str, classification: date) -> Reply:
        r = self.r
        if self.m is not None and r.idacte:
            pm = self.m.build_anomalie_acte(r.idacte, nature, detail, acte_message=r.message_bytes, date=self.day,
                                            classification_date=classification)
            return self._archive(pm.name, pm.xml, pm.documents, delay=None, note=f"AnomalieActe {nature}")
        xml = W.build_anomalie_acte(self.day, nature, detail, r.message, classification)
        name = W.message_name(r.idacte, "AnomalieActe", r.siren, r.departement)
        return self._archive(name, xml, {}, delay=None, note=f"AnomalieActe {nature}")

    def anomalie_enveloppe(self, nature: str, detail: str) -> Reply:
        r = self.r
        stem = r.envelope_name or (r.archive_name.split(".", 1)[0] + ".xml")
        if self.m is not None and r.envelope is not None:
            pm = self.m.build_anomalie_enveloppe(r.envelope_bytes, nature, detail, date=self.day,
                                                 envelope_name=r.envelope_name)
            return self._archive(pm.name, pm.xml, pm.documents, delay=None, note=f"AnomalieEnveloppe {nature}")
        xml = W.build_anomalie_enveloppe(self.day, nature, detail, r.envelope)
        return self._archive(f"ANO_{stem}", xml, {}, delay=None, note=f"AnomalieEnveloppe {nature}")

    def courrier(self, kind: str, delay: float) -> Reply:
        r = self.r
        if self.m is not None:
            pm = self.m.build_courrier(kind, r.idacte, date=self.day)
            return self._archive(pm.name, pm.xml, pm.documents, delay=delay, note=kind)
        doc = f"{r.idacte}-{W.CODES[kind]}_1.pdf"
        xml = W.build_courrier(kind, r.idacte, self.day, doc)
        return self._archive(W.message_name(r.idacte, kind), xml, {doc: W.PDF}, delay=delay, note=kind)

    def ar_for(self, kind: str, date_courrier: date) -> Reply:
        """ARAnnulation for an Annulation, ARPieceComplementaire / ARReponseRejetLettreObservations for answers."""
        r = self.r
        if self.m is not None:
            pm = self.m.build_ar_for(kind, r.idacte, date_courrier, date_reception=self.day)
            return self._archive(pm.name, pm.xml, pm.documents, delay=None, note=pm.kind)
        if kind == "Annulation":
            return self._archive(W.message_name(r.idacte, "ARAnnulation"), W.build_ar_annulation(r.idacte, self.day), {},
                                 delay=None, note="ARAnnulation")
        ar = AR_FOR[kind]
        xml = W.build_ar_reponse(ar, r.idacte, date_courrier, self.day)
        return self._archive(W.message_name(r.idacte, ar), xml, {}, delay=None, note=ar)

    def retour_classification(self, day: date) -> Reply:
        name = W.message_name("", "RetourClassification", self.r.siren, self.r.departement)
        return self._archive(name, retour_classification(day), {}, delay=None, note="RetourClassification")


def acte_objet(r: W.Received) -> str:
    return (r.message.findtext(W.q("Objet")) or "") if r.message is not None else ""


def prefecture_rules(incoming: Incoming) -> Decision:
    settings = incoming.settings
    if incoming.too_large:
        r = W.Received(incoming.name)
        m = W.ARCHIVE_SIREN.search(incoming.name)
        r.siren = m.group("siren") if m else ""
        r.problems.append(("005", "Archive au-delà de la taille maximale acceptée (150 Mo)."))
    else:
        r = W.read_received(incoming.name, incoming.data)
    out = _Out(incoming, r)
    day = incoming.day
    cls_text = settings.extra.get("classification_date")
    classification = date.fromisoformat(str(cls_text)) if cls_text else None
    current = classification or day

    if r.problems:
        nature, detail = r.problems[0]
        return Decision([out.anomalie_enveloppe(nature, detail)], f"AnomalieEnveloppe {nature} : {detail}")

    kind = r.kind
    if kind in ("Acte", "Annulation", *AR_FOR) and not W.IDACTE_RE.match(r.idacte):
        detail = f"IDActe absent ou non conforme dans « {r.message_name} »."
        return Decision([out.anomalie_enveloppe("001", detail)], f"AnomalieEnveloppe 001 : {detail}")

    if kind == "Acte":
        problems = acte_problems(r, day, classification)
        if not problems and incoming.known(f"idacte:{r.idacte}"):
            problems = [("003", f"L'acte {r.idacte} a déjà été transmis et acquitté : transmission en double refusée.")]
        if not problems and incoming.rng.random() < settings.refuse_rate:
            problems = [("005", "Refus simulé par la préfecture (taux de refus configuré).")]
        if problems:
            nature = problems[0][0]
            detail = " ; ".join(d for _, d in problems)
            return Decision([out.anomalie_acte(nature, detail, current)], f"AnomalieActe {nature} pour {r.idacte} : {detail}")
        replies = [out.aracte(current)]
        outcome = f"ARActe pour {r.idacte}"
        forced = FORCED_RE.search(acte_objet(r))
        if forced:
            delay = float(settings.extra.get("forced_delay", 5.0))
            for code in (c.strip() for c in forced.group(1).split(",")):
                if code in FORCED_KINDS:
                    replies.append(out.courrier(FORCED_KINDS[code], delay))
                    outcome += f", puis {FORCED_KINDS[code]} (scénario demandé) après {delay:g} s"
        elif incoming.rng.random() < settings.later_rate:
            later = incoming.rng.choice(LATER_KINDS)
            replies.append(out.courrier(later, settings.later_delay))
            outcome += f", puis {later} après {settings.later_delay:g} s"
        return Decision(replies, outcome, facts=[f"idacte:{r.idacte}"])

    if kind == "Annulation":
        return Decision([out.ar_for("Annulation", day)], f"ARAnnulation pour {r.idacte}")

    if kind == "DemandeClassification":
        return Decision([out.retour_classification(current)], f"RetourClassification du {current.isoformat()}")

    if kind in AR_FOR:
        try:
            date_courrier = date.fromisoformat(W.attr(r.message, "DateCourrierPref"))
        except ValueError:
            date_courrier = day
        reply = out.ar_for(kind, date_courrier)
        return Decision([reply], f"{reply.note} pour {r.idacte}")

    if kind in NO_ANSWER:
        return Decision([], f"{kind} reçu pour {r.idacte} (pas d'accusé de réception prévu)")

    detail = f"Message « {kind} » inattendu de la part d'une collectivité."
    return Decision([out.anomalie_enveloppe("100", detail)], f"AnomalieEnveloppe 100 : {detail}")
