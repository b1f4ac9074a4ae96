"""The préfecture (contrôle de légalité, @ctes) as the platform sees it through SFTP.

Receives TDT-EACT--SIREN--AAAAMMJJ-n.tar.gz archives in depot/, answers tar.gz archives in
retour/ (names and codes: flows.actes.naming and flows.actes.model):
- Every message, the envelope included, is read against the official actesv1_1.xsd when a
  reference directory is available (simulators.reference; the project's schema otherwise).
- Acte (1-1): AnomalieEnveloppe when the archive or envelope is broken; AnomalieActe (1-3) when
  the acte is invalid (the @ctes schema; date in the future, NumeroInterne, Objet, nature,
  classification date, a matière absent from the classification this préfecture published,
  documents that are not real PDFs, a detached XAdES (99_SE) that does not sign the acte or whose
  certificate its own trust store does not accept (simulators.xmlsig), a PAdES signature inside
  the PDF that OpenSSL does not verify against that store (simulators.pdfsig), missing files, IDActe
  already transmitted); otherwise ARActe (1-2). `refuse_rate` turns a valid acte into an AnomalieActe;
  `later_rate` adds, after `later_delay`, a CourrierSimple (2-1), DemandePieceComplementaire
  (3-1) or LettreObservations (4-1).
- Annulation (6-1) -> ARAnnulation (6-2) for an acte it acknowledged and did not annul yet, else
  AnomalieEnveloppe 100; an answer to a letter it never sent -> AnomalieEnveloppe 100 (its ledger
  keeps the IDActe acknowledged, the letters sent, the annulations); DemandeClassification (7-1)
  -> RetourClassification (7-2); RefusPieceComplementaire / PieceComplementaire (3-3 / 3-4) -> ARPieceComplementaire
  (3-5); RejetLettreObservations / ReponseLettreObservations (4-3 / 4-4) ->
  ARReponseRejetLettreObservations (4-5); ReponseCourrierSimple (2-2) and the collectivité's ARs
  (3-2, 4-2) are recorded without answer.

Anomaly natures used by this simulator (the official list is not public; keep them as data):
AnomalieActe 001 invalid acte, 002 classification not current (the one attested nature),
003 IDActe already transmitted, 004 announced file missing, 005 refused (simulated odds);
AnomalieEnveloppe as labelled in flows.actes.messages: 001 envelope or form not conforming,
003 announced file missing, 004 unreadable archive, 005 too large, 100 unexpected message, or an
annulation / answer with nothing to annul or answer.

Messages are built by flows.actes.messages (build_aracte, build_anomalie_acte,
build_anomalie_enveloppe, build_courrier, build_ar_for, build_response_archive). Reading uses
simulators.actes_wire, the préfecture's own checks (it must tell the AnomalieEnveloppe natures apart).

Settings.extra: `classification_date` (ISO date; the acte's ClassificationDateVersion must equal
it; None = not checked).
"""

from __future__ import annotations

import functools
import io
import re
from datetime import date

from lxml import etree
from pypdf import PdfReader

from flows import xmlsafe
from flows.actes import messages
from flows.actes.classification import build_retour_classification, national_default
from flows.actes.model import MESSAGE_CODES
from flows.actes.xmlutil import attr, q
from simulators import actes_wire as W
from simulators import pdfsig, reference, xmlsig
from simulators.counterparts import Decision, Incoming, Reply

NUMERO_RE = re.compile(r"^([A-Z0-9][A-Z0-9_]{0,13})?[A-Z0-9]$")
# DPT-SIREN-AAAAMMJJ-NUMERO-NATURE (FACTS.md §1), the préfecture's own reading, not demat's naming module
IDACTE_RE = re.compile(r"^[0-9]{2}[0-9AB]-[0-9]{9}-[0-9]{8}-[A-Za-z0-9_]{1,15}-(DE|AR|AI|CC|BF|AU)$")
NATURE_ABBR = {"1": "DE", "2": "AR", "3": "AI", "4": "CC", "5": "BF", "6": "AU"}
LATER_KINDS = ("CourrierSimple", "DemandePieceComplementaire", "LettreObservations")
# answers the préfecture acknowledges (3-5 or 4-5, chosen by messages.build_ar_for)
AR_FOR = {"RefusPieceComplementaire", "PieceComplementaire", "RejetLettreObservations", "ReponseLettreObservations"}
NO_ANSWER = {"ReponseCourrierSimple", "ARDemandePieceComplementaire", "ARLettreObservations"}
# Scenario hook (tests, demo): an acte whose Objet contains "[simulateur:3-1]" (2-1, 3-1 or 4-1, several
# separated by commas) gets that letter for sure, `forced_delay` seconds (Settings.extra, default 5) after its AR.
FORCED_RE = re.compile(r"\[simulateur:\s*([0-9]-1(?:\s*,\s*[0-9]-1)*)\s*\]")
FORCED_KINDS = {"2-1": "CourrierSimple", "3-1": "DemandePieceComplementaire", "4-1": "LettreObservations"}
# Scenario hook: an acte whose Objet contains "[simulateur:perdu]" is lost on its way to the ministère: its
# reception is logged (the ledger counts it) but the préfecture never registers it and never answers.
LOST_RE = re.compile(r"\[simulateur:\s*perdu\s*\]")
# which letter of the préfecture each message of the collectivité answers (none sent: refused)
ANSWERS_TO = {
    "ReponseCourrierSimple": "CourrierSimple",
    "ARDemandePieceComplementaire": "DemandePieceComplementaire",
    "RefusPieceComplementaire": "DemandePieceComplementaire",
    "PieceComplementaire": "DemandePieceComplementaire",
    "ARLettreObservations": "LettreObservations",
    "RejetLettreObservations": "LettreObservations",
    "ReponseLettreObservations": "LettreObservations",
}
ANNEX_EXTENSIONS = (".pdf", ".xml", ".jpg", ".jpeg", ".png")


# -- checks ---------------------------------------------------------------------------------------


def acte_problems(r: W.Received, today: date, classification: date | None, *,
                  published: set[tuple[str, ...]] | None = None,
                  trust: xmlsig.TrustStore | None = None) -> list[tuple[str, str]]:
    """(AnomalieActe nature, French detail) for every fault; empty when the acte is acceptable."""
    acte = r.message
    assert acte is not None
    found: list[tuple[str, str]] = []
    for p in reference.errors("actes", acte, limit=5):
        found.append(("001", f"Formulaire non conforme au schéma @ctes : {p}"))
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
    found += matiere_problems(acte, published)
    found += document_problems(r, acte)
    found += signature_problems(r, acte, trust)
    annexes = acte.find(q("Annexes"))
    if annexes is not None:
        declared_count = attr(annexes, "Nombre")
        real = len(annexes.findall(q("Annexe")))
        if declared_count and declared_count != str(real):
            found.append(("001", f"Annexes/@Nombre vaut {declared_count} mais {real} annexe(s) sont listées."))
    return found


def published_matieres(day: date) -> set[tuple[str, ...]]:
    """The matière paths of the classification this préfecture publishes (read back from its own 7-2)."""
    root = xmlsafe.parse_bytes(build_retour_classification(national_default(day)))
    out: set[tuple[str, ...]] = set()

    def walk(el, path: tuple[str, ...], level: int) -> None:
        for child in el.iterfind(q(f"Matiere{level}")):
            code = attr(child, "CodeMatiere")
            out.add((*path, code))
            walk(child, (*path, code), level + 1)

    matieres = root.find(q("Matieres"))
    if matieres is not None:
        walk(matieres, (), 1)
    return out


def matiere_problems(acte, published: set[tuple[str, ...]] | None) -> list[tuple[str, str]]:
    """Each level given must exist in the classification the préfecture published."""
    if not published:
        return []
    path: list[str] = []
    for level in range(1, 6):
        el = acte.find(q(f"CodeMatiere{level}"))
        if el is None:
            break
        path.append(attr(el, "CodeMatiere"))
    if path and tuple(path) not in published:
        return [("001", f"La matière {'.'.join(path)} n'existe pas dans la classification publiée par la préfecture : "
                        "demandez la classification (7-1) et choisissez une matière qui y figure.")]
    return []


def _pdf_problem(data: bytes) -> str | None:
    if not data.startswith(b"%PDF-"):
        return "ne commence pas par l'en-tête %PDF-"
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if len(reader.pages) < 1:
            return "ne contient aucune page"
    except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds on a broken file
        return f"illisible comme PDF ({type(exc).__name__})"
    return None


def document_problems(r: W.Received, acte) -> list[tuple[str, str]]:
    """The acte is a PDF (a budget may be XML); annexes are PDF, XML or images; a .pdf is a real PDF."""
    found: list[tuple[str, str]] = []
    budget = attr(acte, "CodeNatureActe") == "5"
    doc = acte.find(f"{q('Document')}/{q('NomFichier')}")
    main = (doc.text or "").strip() if doc is not None else ""
    annexes = [(e.text or "").strip() for e in acte.iterfind(f"{q('Annexes')}/{q('Annexe')}/{q('NomFichier')}")]
    for name, allowed in ([(main, (".pdf", ".xml") if budget else (".pdf",))] if main else []) + [
            (a, ANNEX_EXTENSIONS) for a in annexes]:
        lower = name.lower()
        if not lower.endswith(allowed):
            found.append(("001", f"Le fichier « {name} » n'est pas d'un format accepté ({', '.join(allowed)})."))
            continue
        data = r.files.get(name)
        if data is None:
            continue
        if lower.endswith(".pdf"):
            problem = _pdf_problem(data)
            if problem:
                found.append(("001", f"Le fichier « {name} » n'est pas un PDF valide : il {problem}."))
    return found


def signature_problems(r: W.Received, acte, trust: xmlsig.TrustStore | None) -> list[tuple[str, str]]:
    """A detached XAdES (99_SE file) must sign the acte's document, with a certificate the préfecture trusts."""
    if trust is None:  # no trust store given to this check (a caller that only wants the rest)
        return []
    doc = acte.find(f"{q('Document')}/{q('NomFichier')}")
    main = r.files.get((doc.text or "").strip()) if doc is not None else None
    found: list[tuple[str, str]] = []
    if main is not None and main.startswith(b"%PDF-") and pdfsig.is_signed(main):  # PAdES, checked with OpenSSL
        found += [("001", f"Signature électronique du PDF de l'acte refusée : {why}.")
                  for why in pdfsig.verify_pdf(main, trust)]
    for name, data in r.files.items():
        if not (name.startswith("99_SE") and name.lower().endswith(".xml")):
            continue
        try:
            sig = xmlsafe.parse_bytes(data)
        except (etree.XMLSyntaxError, ValueError) as exc:
            found.append(("001", f"Fichier de signature « {name} » illisible : {exc}"))
            continue
        if sig.tag != f"{{{xmlsig.DS}}}Signature":
            found.append(("001", f"Fichier de signature « {name} » : pas une signature XML (ds:Signature)."))
            continue
        uris = [ref.get("URI") or "" for ref in sig.iterfind(f"{{{xmlsig.DS}}}SignedInfo/{{{xmlsig.DS}}}Reference")]
        detached = {u: main for u in uris if not u.startswith("#") and main is not None}
        verdict = xmlsig.verify_signature(sig, trust, detached=detached)
        if not detached:
            verdict.add(xmlsig.SIGNATURE, "elle ne désigne pas le document de l'acte")
        for p in verdict.problems[:3]:
            what = "certificat refusé" if p.code == xmlsig.CERTIFICATE else "signature invalide"
            found.append(("001", f"Signature « {name} » de l'acte : {what} ({p.message})."))
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


@functools.lru_cache(maxsize=4)
def _published(day: date) -> frozenset[tuple[str, ...]]:
    return frozenset(published_matieres(day))


def acte_objet(r: W.Received) -> str:
    return (r.message.findtext(q("Objet")) or "") if r.message is not None else ""


def prefecture_rules(incoming: Incoming) -> Decision:
    settings = incoming.settings
    if incoming.too_large:
        r = W.Received(incoming.name)
        m = W.ARCHIVE_SIREN.search(incoming.name)
        r.siren = m.group("siren") if m else ""
        limit = settings.max_bytes / (1024 * 1024)
        r.problems.append(("005", f"Archive au-delà de la taille maximale acceptée ({limit:g} Mio)."))
    else:
        r = W.read_received(incoming.name, incoming.data)
    out = _Out(incoming, r)
    day = incoming.day
    cls_text = settings.extra.get("classification_date")
    classification = date.fromisoformat(str(cls_text)) if cls_text else None
    current = classification or day

    if not r.problems:  # every message is read against the @ctes schema, the envelope included
        for what, doc in (("Enveloppe", r.envelope), (f"Formulaire « {r.message_name} »", r.message)):
            if doc is None or (what != "Enveloppe" and r.kind == "Acte"):  # an Acte's faults are AnomalieActe
                continue
            problems = reference.errors("actes", doc, limit=3)
            if problems:
                r.problems.append(("001", f"{what} non conforme au schéma @ctes : {' ; '.join(problems)}"))
                break
    if r.problems:
        nature, detail = r.problems[0]
        return Decision([out.anomalie_enveloppe(nature, detail)], f"AnomalieEnveloppe {nature} : {detail}")

    kind = r.kind
    if kind in ("Acte", "Annulation", *AR_FOR) and not IDACTE_RE.match(r.idacte):
        detail = f"IDActe absent ou non conforme dans « {r.message_name} »."
        return Decision([out.anomalie_enveloppe("001", detail)], f"AnomalieEnveloppe 001 : {detail}")

    if kind == "Acte":
        if LOST_RE.search(acte_objet(r)):
            return Decision([], f"acte {r.idacte} perdu (scénario demandé) : jamais enregistré, aucune réponse")
        problems = acte_problems(r, day, classification, published=_published(current),
                                 trust=xmlsig.trust_from_settings(settings))
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
        facts = [f"idacte:{r.idacte}"]
        forced = FORCED_RE.search(acte_objet(r))
        if forced:
            delay = float(settings.extra.get("forced_delay", 5.0))
            for code in (c.strip() for c in forced.group(1).split(",")):
                if code in FORCED_KINDS:
                    replies.append(out.courrier(FORCED_KINDS[code], delay))
                    facts.append(f"courrier:{r.idacte}:{FORCED_KINDS[code]}")
                    outcome += f", puis {FORCED_KINDS[code]} (scénario demandé) après {delay:g} s"
        elif incoming.rng.random() < settings.later_rate:
            later = incoming.rng.choice(LATER_KINDS)
            replies.append(out.courrier(later, settings.later_delay))
            facts.append(f"courrier:{r.idacte}:{later}")
            outcome += f", puis {later} après {settings.later_delay:g} s"
        return Decision(replies, outcome, facts=facts)

    if kind == "Annulation":
        if not incoming.known(f"idacte:{r.idacte}"):
            detail = (f"Annulation refusée : l'acte {r.idacte} n'a jamais été reçu ni acquitté par la préfecture "
                      "(rien à annuler). Vérifiez l'IDActe, ou transmettez l'acte.")
            return Decision([out.anomalie_enveloppe("100", detail)], f"AnomalieEnveloppe 100 : {detail}")
        if incoming.known(f"annule:{r.idacte}"):
            detail = f"Annulation refusée : la transmission de l'acte {r.idacte} est déjà annulée."
            return Decision([out.anomalie_enveloppe("100", detail)], f"AnomalieEnveloppe 100 : {detail}")
        return Decision([out.ar_for("Annulation", day)], f"ARAnnulation pour {r.idacte}",
                        facts=[f"annule:{r.idacte}"])

    if kind in ANSWERS_TO and not incoming.known(f"courrier:{r.idacte}:{ANSWERS_TO[kind]}"):
        detail = (f"{kind} refusé : la préfecture n'a envoyé aucun courrier {ANSWERS_TO[kind]} pour l'acte "
                  f"{r.idacte or '(IDActe absent)'} ; il n'y a rien à quoi répondre.")
        return Decision([out.anomalie_enveloppe("100", detail)], f"AnomalieEnveloppe 100 : {detail}")

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
