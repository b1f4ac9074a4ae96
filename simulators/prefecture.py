"""The préfecture (contrôle de légalité, @ctes) as the platform sees it through SFTP.

Receives TDT-EACT--SIREN--AAAAMMJJ-n.tar.gz archives in depot/, answers tar.gz archives in
retour/ (names and codes: flows.actes.naming and flows.actes.model):
- Acte (1-1): AnomalieEnveloppe when the archive or envelope is broken; AnomalieActe (1-3) when
  the acte is invalid (the @ctes schema; date in the future, NumeroInterne, Objet, nature,
  classification date, missing files, IDActe already transmitted); otherwise ARActe (1-2). `refuse_rate` turns a valid acte into an AnomalieActe;
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
build_anomalie_enveloppe, build_courrier, build_ar_for, build_response_archive). Reading uses
simulators.actes_wire, the préfecture's own checks (it must tell the AnomalieEnveloppe natures apart).

Settings.extra: `classification_date` (ISO date; the acte's ClassificationDateVersion must equal
it; None = not checked).
"""

from __future__ import annotations

import re
from datetime import date

from flows.actes import messages
from flows.actes.classification import build_retour_classification, national_default
from flows.actes.model import MESSAGE_CODES
from flows.actes.naming import IDACTE_RE
from flows.actes.xmlutil import attr, q, schema_errors
from simulators import actes_wire as W
from simulators.counterparts import Decision, Incoming, Reply

NUMERO_RE = re.compile(r"^([A-Z0-9][A-Z0-9_]{0,13})?[A-Z0-9]$")
NATURE_ABBR = {"1": "DE", "2": "AR", "3": "AI", "4": "CC", "5": "BF", "6": "AU"}
LATER_KINDS = ("CourrierSimple", "DemandePieceComplementaire", "LettreObservations")
# answers the préfecture acknowledges (3-5 or 4-5, chosen by messages.build_ar_for)
AR_FOR = {"RefusPieceComplementaire", "PieceComplementaire", "RejetLettreObservations", "ReponseLettreObservations"}
NO_ANSWER = {"ReponseCourrierSimple", "ARDemandePieceComplementaire", "ARLettreObservations"}
# Scenario hook (tests, demo): an acte whose Objet contains "[simulateur:3-1]" (2-1, 3-1 or 4-1, several
# separated by commas) gets that letter for sure, `forced_delay` seconds (Settings.extra, default 5) after its AR.
FORCED_RE = re.compile(r"\[simulateur:\s*([0-9]-1(?:\s*,\s*[0-9]-1)*)\s*\]")
FORCED_KINDS = {"2-1": "CourrierSimple", "3-1": "DemandePieceComplementaire", "4-1": "LettreObservations"}


# -- checks ---------------------------------------------------------------------------------------


def acte_problems(r: W.Received, today: date, classification: date | None) -> list[tuple[str, str]]:
    """(AnomalieActe nature, French detail) for every fault; empty when the acte is acceptable."""
    acte = r.message
    assert acte is not None
    found: list[tuple[str, str]] = []
    for p in schema_errors(acte)[:5]:
        found.append(("001", f"Formulaire non conforme : {p}"))
    try:
        decided = date.fromisoformat(attr(acte, "Date"))
        if decided > today:
            found.append(("001", f"La date de décision {decided.isoformat()} est dans le futur."))
    except ValueError:
        found.append(("001", f"Date de décision illisible : « {attr(acte, 'Date')} »."))
    numero = attr(acte, "NumeroInterne")
    if not NUMERO_RE.match(numero):
        found.append(("001", f"Numéro interne « {numero} » non conforme (majuscules, chiffres, _ ; 15 caractères au plus)."))
    objet = (acte.findtext(q("Objet")) or "").strip()
    if not objet or len(objet) > 499 or "\n" in objet:
        found.append(("001", "Objet absent, de plus de 499 caractères ou sur plusieurs lignes."))
    nature = NATURE_ABBR.get(attr(acte, "CodeNatureActe"))
    if nature is None:
        found.append(("001", f"Code nature d'acte inconnu : « {attr(acte, 'CodeNatureActe')} »."))
    elif r.idacte and not r.idacte.endswith(f"-{nature}"):
        found.append(("001", f"La nature {nature} ne correspond pas à l'IDActe {r.idacte}."))
    if r.idacte and r.siren and f"-{r.siren}-" not in r.idacte:
        found.append(("001", f"L'IDActe {r.idacte} ne porte pas le SIREN de l'émetteur {r.siren}."))
    declared = (acte.findtext(q("ClassificationDateVersion")) or "").strip()
    if classification is not None and declared != classification.isoformat():
        found.append((
            "002",
            f"Votre acte a été transmis avec une date de classification qui n'est pas à jour ({declared or 'absente'} "
            f"au lieu de {classification.isoformat()}) : demandez la classification (7-1) puis renvoyez l'acte.",
        ))
    names = [(e.text or "").strip() for e in acte.iter(q("NomFichier"))]
    missing = [n for n in names if n and n not in r.files]
    if missing:
        found.append(("004", f"Pièce(s) annoncée(s) mais absente(s) de l'archive : {', '.join(missing)}."))
    annexes = acte.find(q("Annexes"))
    if annexes is not None:
        declared_count = attr(annexes, "Nombre")
        real = len(annexes.findall(q("Annexe")))
        if declared_count and declared_count != str(real):
            found.append(("001", f"Annexes/@Nombre vaut {declared_count} mais {real} annexe(s) sont listées."))
    return found


# -- the rules ------------------------------------------------------------------------------------


class _Out:
    """Builds the reply archives of one reception (one archive per message, distinct serials)."""

    def __init__(self, incoming: Incoming, r: W.Received):
        self.incoming, self.r = incoming, r
        self.day = incoming.day
        self.n = 0

    def _archive(self, message: messages.PrefMessage, *, delay: float | None = None, note: str = "") -> Reply:
        self.n += 1
        serial = self.incoming.reception_id * 10 + self.n
        r = self.r
        arr = r.arrondissement or "0"
        archive_name, data = messages.build_response_archive(
            [message], serial, r.siren or "000000000", r.departement or "000",
            arrondissement=int(arr) if arr.isdigit() else 0, day=self.day,
        )
        return Reply(archive_name, data, delay=delay, note=note or message.kind)

    def aracte(self, classification: date) -> Reply:
        r = self.r
        return self._archive(messages.build_aracte(r.idacte, self.day, classification, acte_message=r.message_bytes))

    def anomalie_acte(self, nature: str, detail: str, classification: date) -> Reply:
        r = self.r
        pm = messages.build_anomalie_acte(r.idacte, nature, detail, acte_message=r.message_bytes, date=self.day,
                                          classification_date=classification)
        return self._archive(pm, note=f"AnomalieActe {nature}")

    def anomalie_enveloppe(self, nature: str, detail: str) -> Reply:
        r = self.r
        envelope = r.envelope_bytes if r.envelope is not None else None
        name = r.envelope_name or (r.archive_name.split(".", 1)[0] + ".xml")
        pm = messages.build_anomalie_enveloppe(envelope, nature, detail, date=self.day, envelope_name=name)
        return self._archive(pm, note=f"AnomalieEnveloppe {nature}")

    def courrier(self, kind: str, delay: float) -> Reply:
        return self._archive(messages.build_courrier(kind, self.r.idacte, date=self.day), delay=delay)

    def ar_for(self, kind: str, date_courrier: date) -> Reply:
        """ARAnnulation for an Annulation, ARPieceComplementaire / ARReponseRejetLettreObservations for answers."""
        return self._archive(messages.build_ar_for(kind, self.r.idacte, date_courrier, date_reception=self.day))

    def retour_classification(self, day: date) -> Reply:
        r = self.r
        name = f"{r.departement or '000'}-{r.siren or '000000000'}----{MESSAGE_CODES['RetourClassification']}_0.xml"
        xml = build_retour_classification(national_default(day))
        return self._archive(messages.PrefMessage("RetourClassification", name, xml))


def acte_objet(r: W.Received) -> str:
    return (r.message.findtext(q("Objet")) or "") if r.message is not None else ""


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
    if kind in ("Acte", "Annulation", *AR_FOR) and not IDACTE_RE.match(r.idacte):
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
            date_courrier = date.fromisoformat(attr(r.message, "DateCourrierPref"))
        except ValueError:
            date_courrier = day
        reply = out.ar_for(kind, date_courrier)
        return Decision([reply], f"{reply.note} pour {r.idacte}")

    if kind in NO_ANSWER:
        return Decision([], f"{kind} reçu pour {r.idacte} (pas d'accusé de réception prévu)")

    detail = f"Message « {kind} » inattendu de la part d'une collectivité."
    return Decision([out.anomalie_enveloppe("100", detail)], f"AnomalieEnveloppe 100 : {detail}")
