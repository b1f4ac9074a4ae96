"""The préfecture's letters and the collectivité's answers (@ctes 2-x, 3-x, 4-x, 5-x, 6-x).

A letter of the préfecture (courrier simple 2-1, demande de pièces complémentaires 3-1, lettre
d'observations 4-1, déféré 5-1) is recorded in `actes_courrier`; the agent is alerted by a French
text file in `<inbox>/<collectivité>/actes/courriers/` (with the letter's PDF beside it), and a
reply folder `<inbox>/<collectivité>/actes/reponses/<IDActe>/` is created. The agent drops the
answer's PDF(s) there, optionally with `reponse.json` (docs/actes-reponses.md). `process_replies`
claims each ready folder (atomic rename into `reponses/.en-cours/`), builds the answer with
flows.actes, checks it, records it BEFORE sending (`actes_envoi` + artefact), uploads it like an
acte (atomic, idempotent) and moves the folder into `reponses/traites/`. A crash anywhere resumes
from what was recorded: the same bytes are sent, never two different answers.

`request_annulation` sends the 6-1 Annulation of a transmitted acte the same way.
`prepare_answer` and `prepare_annulation` record what the dossier page or the API asks
(flows.pipeline.actions); the next batch uploads it like a resumed answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import BigInteger, Date, DateTime, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from flows.dossier import service
from flows.dossier.db import ensure_tables, session_scope
from flows.dossier.models import Base, Dossier
from flows.dossier.store import ArtefactStore
from flows.findings import Finding, Report
from flows.settings import Settings

log = logging.getLogger(__name__)

COURRIERS_DIR = "courriers"
REPLIES_DIR = "reponses"
DONE_DIR = "traites"
CLAIMED_DIR = ".en-cours"
ERROR_FILE = "ERREUR.txt"
INSTRUCTIONS_FILE = "reponse.json"
MAX_ANSWER_BYTES = 150 * 1024 * 1024

COURRIER_KINDS = ("CourrierSimple", "DemandePieceComplementaire", "LettreObservations", "DefereTA")
# The answers a letter admits: [natural answer with documents, ..., natural answer without document]
ANSWERS_FOR: dict[str, tuple[str, ...]] = {
    "CourrierSimple": ("ReponseCourrierSimple",),
    "DemandePieceComplementaire": ("PieceComplementaire", "RefusPieceComplementaire", "ARDemandePieceComplementaire"),
    "LettreObservations": ("ReponseLettreObservations", "RejetLettreObservations", "ARLettreObservations"),
}
COURRIER_OF_ANSWER = {a: c for c, answers in ANSWERS_FOR.items() for a in answers}
NO_DOCUMENT = {"ARDemandePieceComplementaire", "ARLettreObservations"}
FINAL_ANSWERS = {"ReponseCourrierSimple", "PieceComplementaire", "RefusPieceComplementaire",
                 "ReponseLettreObservations", "RejetLettreObservations"}
# The préfecture's acknowledgments of what we send
ACKNOWLEDGES = {
    "ARPieceComplementaire": ("PieceComplementaire", "RefusPieceComplementaire"),
    "ARReponseRejetLettreObservations": ("ReponseLettreObservations", "RejetLettreObservations"),
    "ARAnnulation": ("Annulation",),
}
COURRIER_LABELS = {
    "CourrierSimple": "courrier simple (2-1)",
    "DemandePieceComplementaire": "demande de pièces complémentaires (3-1)",
    "LettreObservations": "lettre d'observations (4-1)",
    "DefereTA": "déféré au tribunal administratif (5-1)",
}
ANSWER_LABELS = {
    "ReponseCourrierSimple": "réponse au courrier simple (2-2)",
    "ARDemandePieceComplementaire": "accusé de réception de la demande de pièces (3-2)",
    "RefusPieceComplementaire": "refus d'envoyer les pièces complémentaires (3-3)",
    "PieceComplementaire": "envoi des pièces complémentaires (3-4)",
    "ARLettreObservations": "accusé de réception de la lettre d'observations (4-2)",
    "RejetLettreObservations": "refus de répondre à la lettre d'observations (4-3)",
    "ReponseLettreObservations": "réponse à la lettre d'observations (4-4)",
    "Annulation": "annulation de la transmission (6-1)",
}


# --------------------------------------------------------------------------------------------- tables
class PrefectureCourrier(Base):
    """A letter of the préfecture about an acte, and whether the collectivité has answered it."""

    __tablename__ = "actes_courrier"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    dossier_id: Mapped[str] = mapped_column(String(80), index=True)
    idacte: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    code: Mapped[str] = mapped_column(String(3))
    date_courrier: Mapped[date | None] = mapped_column(Date, nullable=True)  # DateCourrierPref (DateDepot for 5-1)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    message_name: Mapped[str] = mapped_column(String(255))
    archive_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="attente_reponse")  # attente_reponse|repondu|sans_reponse
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ActesEnvoi(Base):
    """A message other than the 1-1 sent for an acte (answers 2-2..4-4, Annulation 6-1).

    Written before the upload: a retry resends exactly these bytes."""

    __tablename__ = "actes_envoi"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    dossier_id: Mapped[str] = mapped_column(String(80), index=True)
    courrier_id: Mapped[int | None] = mapped_column(ForeignKey("actes_courrier.id"), nullable=True)
    idacte: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    code: Mapped[str] = mapped_column(String(3))
    name: Mapped[str] = mapped_column(String(255), unique=True)  # archive name
    message_name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    folder: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)  # claimed reply folder
    actor: Mapped[str] = mapped_column(String(128), default="demat")
    motif: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="prepare")  # prepare|transmis|acquitte|refuse
    prepared_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    transmitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def ensure_schema(session: Session) -> None:
    """This module's tables (and the classification ones), created if missing (flows.dossier.db.ensure_tables)."""
    from flows.pipeline.classification import TABLES as CLASSIFICATION_TABLES

    ensure_tables(session, "actes-answers",
                  [PrefectureCourrier.__table__, ActesEnvoi.__table__, *CLASSIFICATION_TABLES])


# --------------------------------------------------------------------------------------------- folders
def actes_dir(inbox_root: Path, collectivite: str) -> Path:
    return Path(inbox_root) / collectivite / "actes"


def courriers_dir(inbox_root: Path, collectivite: str) -> Path:
    return actes_dir(inbox_root, collectivite) / COURRIERS_DIR


def replies_dir(inbox_root: Path, collectivite: str) -> Path:
    return actes_dir(inbox_root, collectivite) / REPLIES_DIR


def reply_folder(inbox_root: Path, collectivite: str, idacte: str) -> Path:
    return replies_dir(inbox_root, collectivite) / idacte


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _fr(d: date | None) -> str:
    return d.strftime("%d/%m/%Y") if d else "(date inconnue)"


# --------------------------------------------------------------------------------------------- letters
def record_courrier(session: Session, store: ArtefactStore, dossier: Dossier, msg, *, archive_name: str,
                    archive_sha256: str, documents: dict[str, bytes], inbox_root: Path | None) -> PrefectureCourrier:
    """Record a letter of the préfecture (once), journal it, alert the agent and open the reply folder."""
    ensure_schema(session)
    existing = session.execute(
        select(PrefectureCourrier).where(PrefectureCourrier.dossier_id == dossier.id,
                                         PrefectureCourrier.message_name == (msg.name or ""),
                                         PrefectureCourrier.archive_sha256 == archive_sha256)
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    answerable = msg.kind in ANSWERS_FOR
    courrier = PrefectureCourrier(
        dossier_id=dossier.id, idacte=msg.idacte, kind=msg.kind, code=msg.code,
        date_courrier=msg.date_courrier_pref or msg.date, detail=(msg.detail or None), message_name=msg.name or "",
        archive_sha256=archive_sha256, status="attente_reponse" if answerable else "sans_reponse",
        received_at=service.now(),
    )
    session.add(courrier)
    session.flush()
    for name, data in documents.items():
        service.attach(session, store, dossier, kind=f"courrier_{msg.code}", name=name, data=data,
                       media_type="application/pdf" if name.lower().endswith(".pdf") else "application/octet-stream")
    service.note(session, dossier, event=msg.kind, actor="préfecture", message=msg.summary_fr,
                 details={"code": msg.code, "date_courrier": str(courrier.date_courrier or ""),
                          "documents": list(documents), "courrier_id": courrier.id})
    where = None
    if inbox_root is not None:
        try:
            where = write_alert(inbox_root, dossier, courrier, msg.summary_fr, documents)
        except OSError as exc:  # the letter is recorded; the next answers batch writes the alert again
            log.exception("alerte non écrite pour %s", dossier.id)
            where = None
            service.note(session, dossier, event="alerte", actor="demat",
                         message=f"L'alerte n'a pas pu être écrite dans le dossier d'entrée ({exc.__class__.__name__}) : "
                                 "nouvel essai au prochain passage.")
    if where is not None:
        reply_hint = (f" Déposez la réponse dans « {where[1]} »." if answerable else
                      " Aucune réponse par @ctes n'est prévue : prévenez l'élu et le service juridique.")
        service.note(session, dossier, event="alerte", actor="demat",
                     message=f"Agent alerté : {COURRIER_LABELS.get(msg.kind, msg.kind)} reçu(e) pour l'acte "
                             f"{msg.idacte} (alerte « {where[0].name} »).{reply_hint}",
                     details={"alerte": str(where[0]), "dossier_reponse": str(where[1]) if answerable else ""})
    return courrier


def write_alert(inbox_root: Path, dossier: Dossier, courrier: PrefectureCourrier, summary_fr: str,
                documents: dict[str, bytes]) -> tuple[Path, Path]:
    """ALERTE-<dossier>.txt (+ the letter's PDF) in courriers/, and the reply folder. Idempotent."""
    folder = courriers_dir(inbox_root, dossier.collectivite)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in documents.items():
        safe = Path(name).name
        if safe and not (folder / safe).exists():
            _atomic_write(folder / safe, data)
    replies = reply_folder(inbox_root, dossier.collectivite, courrier.idacte)
    answerable = courrier.kind in ANSWERS_FOR
    if answerable:
        replies.mkdir(parents=True, exist_ok=True)
    label = COURRIER_LABELS.get(courrier.kind, courrier.kind)
    lines = [
        f"ALERTE demat : {label} de la préfecture",
        "",
        f"Dossier : {dossier.id}",
        f"Acte : {courrier.idacte}" + (f" (« {dossier.objet} »)" if dossier.objet else ""),
        f"Date du courrier : {_fr(courrier.date_courrier)}",
        f"Reçu le : {courrier.received_at:%d/%m/%Y à %H:%M} UTC",
        "",
        summary_fr,
        "",
    ]
    if documents:
        lines += ["Courrier de la préfecture (à lire) : " + ", ".join(Path(n).name for n in documents), ""]
    if answerable:
        natural = ANSWERS_FOR[courrier.kind]
        lines += [
            "POUR RÉPONDRE :",
            f"  1. déposez le ou les PDF de la réponse dans : {replies}",
            f"  2. facultatif : un fichier {INSTRUCTIONS_FILE} qui précise la réponse, par exemple",
            f'     {{"reponse": "{_code(natural[0])}", "motif": "..."}}',
            "     réponses possibles : " + ", ".join(f"{_code(k)} {ANSWER_LABELS[k]}" for k in natural),
            f"  Sans {INSTRUCTIONS_FILE} : {ANSWER_LABELS[natural[0]]} si des PDF sont déposés"
            + (f", {ANSWER_LABELS[natural[-1]]} sinon." if natural[-1] in NO_DOCUMENT else "."),
            "  demat transmet la réponse à la préfecture dans la minute et range le dossier dans « traites ».",
            "  En cas d'erreur, un fichier ERREUR.txt explique quoi corriger, dans le dossier de réponse.",
        ]
    else:
        lines += ["Aucune réponse par @ctes n'est prévue : prévenez immédiatement l'élu et le service juridique."]
    alert = folder / f"ALERTE-{dossier.id}.txt"
    previous = alert.read_text(encoding="utf-8") if alert.exists() else ""
    text = "\n".join(lines) + "\n"
    if text not in previous:  # several letters for one dossier: newest first, none lost
        _atomic_write(alert, (text + ("\n" + "-" * 72 + "\n\n" + previous if previous else "")).encode("utf-8"))
    return alert, replies


def _code(kind: str) -> str:
    from flows.actes.model import MESSAGE_CODES

    return MESSAGE_CODES.get(kind, kind)


def ensure_alerts(settings: Settings) -> int:
    """Re-create the reply folder of every letter still waiting (a lost alert is rewritten)."""
    count = 0
    with session_scope(settings.database_url) as session:
        ensure_schema(session)
        rows = session.execute(
            select(PrefectureCourrier, Dossier).join(Dossier, Dossier.id == PrefectureCourrier.dossier_id)
            .where(PrefectureCourrier.status == "attente_reponse")
        ).all()
        for courrier, dossier in rows:
            folder = reply_folder(settings.inbox_root, dossier.collectivite, courrier.idacte)
            alert = courriers_dir(settings.inbox_root, dossier.collectivite) / f"ALERTE-{dossier.id}.txt"
            if not alert.exists():
                write_alert(settings.inbox_root, dossier, courrier, f"{COURRIER_LABELS.get(courrier.kind)} en attente "
                            "de réponse.", {})
                count += 1
            elif not folder.exists() and not _claimed_for(settings.inbox_root, dossier.collectivite, courrier.idacte):
                folder.mkdir(parents=True, exist_ok=True)
                count += 1
    return count


def _claimed_for(inbox_root: Path, collectivite: str, idacte: str) -> bool:
    claimed = replies_dir(inbox_root, collectivite) / CLAIMED_DIR
    return claimed.is_dir() and any(p.name.startswith(idacte + "__") for p in claimed.iterdir())


# --------------------------------------------------------------------------------------------- reply folders
@dataclass
class ReplyFiles:
    documents: list[tuple[str, bytes]]
    instructions: dict
    digest: str
    folder: Path | None = None  # the agent's reply folder (None: from the UI or the API)


class AnswerRefused(ValueError):
    """The agent's answer cannot be sent as it is (French message, written to ERREUR.txt)."""


class AnswerWaits(RuntimeError):
    """The antivirus gave no verdict (clamd down): the answer waits, neither sent nor refused."""


WAITING_FILE = ".ATTENTE-antivirus.txt"


def scan_documents(settings: Settings, collectivite: str, documents: list[tuple[str, bytes]],
                   folder: Path | None = None) -> None:
    """ClamAV on every document of an answer before anything is stored. Infected: each one goes to
    quarantine (moved out of the agent's folder when there is one) and the answer is refused."""
    from flows import antivirus

    scanner = antivirus.scanner_from_env()
    if scanner is None:
        return
    found = []
    for name, data in documents:
        verdict = scanner.scan_bytes(data)
        if verdict.waits:
            raise AnswerWaits(antivirus.waiting_text(name, verdict.detail))
        if verdict.infected:
            found.append((name, data, verdict.signature))
    for name, data, signature in found:
        source = folder / name if folder is not None and (folder / name).is_file() else data
        antivirus.quarantine(antivirus.quarantine_root(settings.state_dir), collectivite, "actes", name, source,
                             shown=name, signature=signature)
    if found:
        raise AnswerRefused("l'antivirus (ClamAV) a détecté " + ", ".join(f"« {sig} » dans « {name} »"
                                                                       for name, _, sig in found)
                            + " : ces fichiers ont été retirés et mis en quarantaine, rien n'a été envoyé. "
                              "N'ouvrez pas ces fichiers ; faites analyser le poste qui les a produits, puis déposez "
                              "des documents sains")


def _visible(p: Path) -> bool:
    return p.is_file() and not p.is_symlink() and not p.name.startswith((".", "~")) and not p.name.endswith(
        (".part", ".tmp", ".crdownload", ".swp"))


def is_ready(folder: Path, *, min_age: float = 2.0, now: float | None = None) -> bool:
    """Some files, none changed for `min_age` seconds, and not already refused without change since."""
    files = [p for p in folder.iterdir() if _visible(p) and p.name != ERROR_FILE]
    if not files:
        return False
    now = datetime.now(UTC).timestamp() if now is None else now
    newest = max(p.stat().st_mtime for p in files)
    if now - newest < min_age:
        return False
    error = folder / ERROR_FILE
    return not (error.exists() and error.stat().st_mtime >= newest)


def read_reply_folder(folder: Path) -> ReplyFiles:
    docs: list[tuple[str, bytes]] = []
    instructions: dict = {}
    h = hashlib.sha256()
    for p in sorted(folder.iterdir(), key=lambda x: x.name):
        if not _visible(p) or p.name == ERROR_FILE:
            continue
        data = p.read_bytes()
        h.update(p.name.encode() + b"\0" + hashlib.sha256(data).digest())
        if p.suffix.lower() == ".json":
            if instructions:
                raise AnswerRefused(f"plusieurs fichiers JSON dans le dossier de réponse : gardez seulement {INSTRUCTIONS_FILE}")
            try:
                instructions = json.loads(data.decode("utf-8-sig"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise AnswerRefused(f"« {p.name} » n'est pas un JSON lisible ({exc})") from exc
            if not isinstance(instructions, dict):
                raise AnswerRefused(f"« {p.name} » doit contenir un objet JSON, par exemple "
                                    '{"reponse": "3-4", "motif": "..."}')
            continue
        docs.append((p.name, data))
    return ReplyFiles(docs, instructions, h.hexdigest(), folder)


def choose_answer(courriers: list[PrefectureCourrier], files: ReplyFiles) -> tuple[PrefectureCourrier, str]:
    """Which letter is answered and by which message (JSON first, else the natural answer)."""
    from flows.actes.model import KIND_BY_CODE

    wanted = str(files.instructions.get("reponse") or files.instructions.get("code") or "").strip()
    pending = [c for c in courriers if c.kind in ANSWERS_FOR and c.status == "attente_reponse"]
    if wanted:
        kind = KIND_BY_CODE.get(wanted, wanted)
        if kind not in COURRIER_OF_ANSWER:
            raise AnswerRefused(
                f"réponse « {wanted} » inconnue : indiquez l'un des codes "
                + ", ".join(f"{_code(k)} ({ANSWER_LABELS[k]})" for k in COURRIER_OF_ANSWER))
        target = COURRIER_OF_ANSWER[kind]
        candidates = [c for c in courriers if c.kind == target]
        date_text = str(files.instructions.get("date_courrier") or "").strip()
        if date_text:
            candidates = [c for c in candidates if str(c.date_courrier or "") == date_text]
        waiting = [c for c in candidates if c.status == "attente_reponse"]
        if not (waiting or candidates):
            raise AnswerRefused(
                f"aucun(e) {COURRIER_LABELS[target]} reçu(e) pour cet acte"
                + (f" à la date du {date_text}" if date_text else "") + f" : la réponse {_code(kind)} ne répond à rien")
        if not waiting:
            raise AnswerRefused(f"le ou la {COURRIER_LABELS[target]} a déjà reçu sa réponse : rien à envoyer")
        return waiting[-1], kind
    if not pending:
        raise AnswerRefused("aucun courrier de la préfecture n'attend de réponse pour cet acte")
    courrier = pending[-1]
    natural = ANSWERS_FOR[courrier.kind]
    if files.documents:
        return courrier, natural[0]
    if natural[-1] in NO_DOCUMENT:
        return courrier, natural[-1]
    raise AnswerRefused(f"aucun PDF déposé : la {ANSWER_LABELS[natural[0]]} porte un document")


def check_answer(tx, documents: list[tuple[str, bytes]], *, max_bytes: int = MAX_ANSWER_BYTES) -> Report:
    """What the ministère checks on an answer: schema of the message and envelope, real readable PDFs,
    size, and the archive reads back with exactly the files announced."""
    from flows.actes import xmlutil as X
    from flows.actes.messages import read_archive
    from flows.actes.validate import check_pdf

    report = Report(file=tx.archive_name, kind="actes_reponse")
    for name, data in documents:
        place = f"fichier « {name} »"
        if not name.lower().endswith(".pdf"):
            report.add(Finding("ACTES-FORMAT", f"format « {Path(name).suffix or '?'} » non accepté : PDF attendu",
                               "convertissez le document en PDF", place, name, layer="lecture"))
            continue
        check_pdf(data, place, report)
    for label, xml in (("message", tx.message_xml), ("enveloppe", tx.envelope_xml)):
        for err in X.schema_errors(xml):
            report.add(Finding("XSD", f"{label} non conforme au schéma @ctes : {err}",
                               "signalez-le à l'administrateur de demat", label, layer="xsd"))
    if len(tx.archive_bytes) > max_bytes:
        report.add(Finding("ACTES-TAILLE", f"l'archive fait {len(tx.archive_bytes)} octets (maximum {max_bytes})",
                           "réduisez la taille des PDF", "archive", str(len(tx.archive_bytes)), layer="lecture"))
    archive = read_archive(tx.archive_bytes, tx.archive_name)
    for problem in archive.problems:
        report.add(Finding("ACTES-ARCHIVE", problem, "signalez-le à l'administrateur de demat", "archive",
                           layer="lecture"))
    return report


# --------------------------------------------------------------------------------------------- sending
@dataclass
class AnswersResult:
    sent: list[str] = field(default_factory=list)  # archive names uploaded (or found already there)
    refused: list[str] = field(default_factory=list)  # reply folders refused (ERREUR.txt written)
    resumed: list[str] = field(default_factory=list)


def _claim(folder: Path) -> Path | None:
    claimed_root = folder.parent / CLAIMED_DIR
    claimed_root.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    target = claimed_root / f"{folder.name}__{stamp}"
    try:
        os.rename(folder, target)
    except FileNotFoundError:
        return None
    return target


def _finish_folder(claimed: Path) -> Path:
    done = claimed.parent.parent / DONE_DIR
    done.mkdir(exist_ok=True)
    target = done / claimed.name
    os.rename(claimed, target)
    return target


def _give_back(claimed: Path, idacte: str, explanation: str) -> Path:
    """Put a refused answer back where the agent dropped it, with ERREUR.txt."""
    home = claimed.parent.parent / idacte
    if home.exists():
        home = claimed.parent.parent / f"{idacte}-refusee-{claimed.name.split('__')[-1]}"
    os.rename(claimed, home)
    (home / ERROR_FILE).write_text(explanation, encoding="utf-8")
    return home


def _upload(settings: Settings, envoi_id: int, endpoint_factory, upload_dir: str) -> tuple[str, bool]:
    with session_scope(settings.database_url) as session:
        envoi = session.get(ActesEnvoi, envoi_id)
        name, sha = envoi.name, envoi.sha256
    data = ArtefactStore(settings.store_root).get(sha)
    with endpoint_factory("prefecture") as ep:
        uploaded = ep.upload_atomic(upload_dir, name, data)
    return name, uploaded


def _mark_sent(settings: Settings, envoi_id: int, already_there: bool) -> None:
    with session_scope(settings.database_url) as session:
        envoi = session.get(ActesEnvoi, envoi_id)
        if envoi.status != "prepare":
            return
        dossier = service.get(session, envoi.dossier_id, for_update=True)
        envoi.status, envoi.transmitted_at = "transmis", service.now()
        label = ANSWER_LABELS.get(envoi.kind, envoi.kind)
        courrier = session.get(PrefectureCourrier, envoi.courrier_id) if envoi.courrier_id else None
        about = (f" en réponse au/à la {COURRIER_LABELS.get(courrier.kind, courrier.kind)} du "
                 f"{_fr(courrier.date_courrier)}") if courrier is not None else ""
        if courrier is not None and envoi.kind in FINAL_ANSWERS:
            courrier.status, courrier.answered_at = "repondu", service.now()
        note = " (déjà présent chez la préfecture : pas de second envoi)" if already_there else ""
        motif = f" Motif : {envoi.motif}." if envoi.motif else ""
        service.note(session, dossier, event=f"envoi_{envoi.code}", actor=envoi.actor,
                     message=f"Transmis à la préfecture (@ctes) : {label}{about}, {envoi.name}{note}.{motif}",
                     details={"name": envoi.name, "code": envoi.code, "kind": envoi.kind,
                              "courrier_id": envoi.courrier_id})


def _prepare_answer(settings: Settings, claimed: Path, collectivite: str, idacte: str) -> int:
    """Build, check and record the answer of a claimed folder. Returns the actes_envoi id."""
    files = read_reply_folder(claimed)
    coll = settings.config.collectivite(collectivite)
    with session_scope(settings.database_url) as session:
        ensure_schema(session)
        existing = session.execute(select(ActesEnvoi).where(ActesEnvoi.folder == claimed.name)).scalar_one_or_none()
        if existing is not None:
            return existing.id
        dossier = session.execute(
            select(Dossier).where(Dossier.idacte == idacte, Dossier.collectivite == collectivite)
            .order_by(Dossier.transmitted_at.desc().nulls_last(), Dossier.created_at.desc())
        ).scalars().first()
        if dossier is None:
            raise AnswerRefused(f"aucun acte {idacte} transmis par {coll.name} : vérifiez le nom du dossier de réponse")
        actor = str(files.instructions.get("agent") or "agent de la collectivité")[:128]
        return _record_answer(settings, session, dossier.id, files, key=claimed.name, actor=actor)


def prepare_answer(settings: Settings, dossier_id: str, files: ReplyFiles, *, key: str, actor: str) -> tuple[int, bool]:
    """The same answer given from the UI or the API: checked and recorded now (status "prepare"),
    uploaded by the next answers batch like a resumed one. `key` makes a repeated request a no-op.
    Returns (actes_envoi id, created)."""
    with session_scope(settings.database_url) as session:
        ensure_schema(session)
        service.get(session, dossier_id, for_update=True)  # serialises two identical requests
        existing = session.execute(select(ActesEnvoi).where(ActesEnvoi.folder == key)).scalar_one_or_none()
        if existing is not None:
            return existing.id, False
        return _record_answer(settings, session, dossier_id, files, key=key, actor=actor[:128]), True


def _record_answer(settings: Settings, session: Session, dossier_id: str, files: ReplyFiles, *, key: str,
                   actor: str) -> int:
    from flows.actes.transmission import build_answer, paris_today
    from flows.pipeline.steps import _next_serial

    store = ArtefactStore(settings.store_root)
    dossier = service.get(session, dossier_id, for_update=True)
    idacte = dossier.idacte or ""
    coll = settings.config.collectivite(dossier.collectivite)
    courriers = session.execute(
        select(PrefectureCourrier).where(PrefectureCourrier.dossier_id == dossier.id)
        .order_by(PrefectureCourrier.received_at, PrefectureCourrier.id)
    ).scalars().all()
    scan_documents(settings, dossier.collectivite, files.documents, files.folder)
    courrier, kind = choose_answer(list(courriers), files)
    docs = [] if kind in NO_DOCUMENT else files.documents
    if kind in NO_DOCUMENT and files.documents:
        raise AnswerRefused(f"la {ANSWER_LABELS[kind]} ne porte pas de document : retirez les PDF ou choisissez "
                            "une autre réponse")
    if courrier.date_courrier is None:
        raise AnswerRefused("la date du courrier de la préfecture est inconnue : réponse impossible par @ctes")
    today = paris_today()
    try:
        # documents checked before a serial is taken: a refused answer leaves no gap
        precheck = build_answer(kind, idacte, courrier.date_courrier, coll, documents=docs, serial=1,
                                trigram=settings.config.trigram, day=today)
    except ValueError as exc:
        raise AnswerRefused(str(exc)) from exc
    report = check_answer(precheck, docs)
    if not report.ok:
        raise AnswerRefused("la réponse n'est pas conforme :\n" + report.to_text())
    serial = _next_serial(session, coll.siren, today.strftime("%Y%m%d"))
    tx = build_answer(kind, idacte, courrier.date_courrier, coll, documents=docs, serial=serial,
                      trigram=settings.config.trigram, day=today)
    motif = str(files.instructions.get("motif") or "").strip() or None
    art = service.attach(session, store, dossier, kind=f"envoi_{tx.code}", name=tx.archive_name,
                         data=tx.archive_bytes, media_type="application/gzip")
    envoi = ActesEnvoi(dossier_id=dossier.id, courrier_id=courrier.id, idacte=idacte, kind=kind, code=tx.code,
                       name=tx.archive_name, message_name=tx.message_name, sha256=art.sha256, folder=key,
                       actor=actor, motif=motif, status="prepare", prepared_at=service.now())
    session.add(envoi)
    session.flush()
    return envoi.id


def process_replies(settings: Settings, endpoint_factory, upload_dir: str = "depot", *,
                    min_age: float = 2.0) -> AnswersResult:
    """One batch over every collectivité: resume what a crash interrupted, then send each ready answer."""
    result = AnswersResult()
    with session_scope(settings.database_url) as session:
        ensure_schema(session)
        pending = session.execute(select(ActesEnvoi.id, ActesEnvoi.name).where(ActesEnvoi.status == "prepare")).all()
    for envoi_id, name in pending:  # recorded but maybe not uploaded: same bytes again
        _, uploaded = _upload(settings, envoi_id, endpoint_factory, upload_dir)
        _mark_sent(settings, envoi_id, already_there=not uploaded)
        result.resumed.append(name)
    for coll in settings.config.collectivites:
        root = replies_dir(settings.inbox_root, coll.slug)
        if not root.is_dir():
            continue
        claimed_root = root / CLAIMED_DIR
        leftovers = sorted(claimed_root.iterdir()) if claimed_root.is_dir() else []
        fresh = []
        for folder in sorted(root.iterdir()):
            if not folder.is_dir() or folder.name in (DONE_DIR, CLAIMED_DIR) or folder.name.startswith("."):
                continue
            if not _looks_like_idacte(folder.name) or not is_ready(folder, min_age=min_age):
                continue
            claimed = _claim(folder)
            if claimed is not None:
                fresh.append(claimed)
        for claimed in [*leftovers, *fresh]:
            idacte = claimed.name.split("__", 1)[0]
            try:
                envoi_id = _prepare_answer(settings, claimed, coll.slug, idacte)
            except AnswerWaits as exc:  # stays claimed: the next batch scans it again
                log.warning("Réponse %s en attente de l'antivirus", idacte)
                (claimed / WAITING_FILE).write_text(str(exc), encoding="utf-8")
                continue
            except AnswerRefused as exc:
                _refuse(settings, claimed, coll.slug, idacte, str(exc))
                result.refused.append(idacte)
                continue
            name, uploaded = _upload(settings, envoi_id, endpoint_factory, upload_dir)
            _mark_sent(settings, envoi_id, already_there=not uploaded)
            (claimed / WAITING_FILE).unlink(missing_ok=True)
            _finish_folder(claimed)
            result.sent.append(name)
    ensure_alerts(settings)  # a letter still waiting (after a 3-2 / 4-2) gets its reply folder back
    return result


def _looks_like_idacte(name: str) -> bool:
    from flows.actes.naming import IDACTE_RE

    return bool(IDACTE_RE.match(name))


def _refuse(settings: Settings, claimed: Path, collectivite: str, idacte: str, reason: str) -> None:
    text = (f"demat n'a PAS transmis cette réponse à la préfecture (acte {idacte}).\n\n"
            f"Raison : {reason}\n\nCorrigez puis laissez les fichiers dans ce dossier : demat réessaie dès qu'un "
            f"fichier change. Format du fichier {INSTRUCTIONS_FILE} : voir docs/actes-reponses.md.\n")
    home = _give_back(claimed, idacte, text)
    with session_scope(settings.database_url) as session:
        dossier = session.execute(
            select(Dossier).where(Dossier.idacte == idacte, Dossier.collectivite == collectivite)
            .order_by(Dossier.created_at.desc())
        ).scalars().first()
        if dossier is not None:
            service.note(session, dossier, event="reponse_refusee", actor="demat",
                         message=f"Réponse de l'agent NON transmise : {reason.splitlines()[0]} "
                                 f"(explication dans « {home / ERROR_FILE} »).",
                         details={"dossier_reponse": str(home)})


# --------------------------------------------------------------------------------------------- annulation
ANNULABLE = ("transmis", "acquitte", "depose_sae", "archive")


def request_annulation(settings: Settings, dossier_id: str, actor: str, motif: str, *, endpoint_factory,
                       upload_dir: str = "depot") -> str:
    """Send the 6-1 Annulation of a transmitted acte (once; a retry resends the same bytes).
    Returns the archive name. ValueError (French) if the acte cannot be cancelled."""
    envoi_id, _ = prepare_annulation(settings, dossier_id, actor, motif)
    name, uploaded = _upload(settings, envoi_id, endpoint_factory, upload_dir)
    _mark_sent(settings, envoi_id, already_there=not uploaded)
    return name


def prepare_annulation(settings: Settings, dossier_id: str, actor: str, motif: str) -> tuple[int, bool]:
    """Build and record the 6-1 (status "prepare") without sending it: the upload is request_annulation's
    or the next answers batch's. Returns (actes_envoi id, created); an existing request is reused."""
    from flows.actes.transmission import build_annulation, paris_today
    from flows.pipeline.steps import _next_serial

    store = ArtefactStore(settings.store_root)
    motif = (motif or "").strip()
    with session_scope(settings.database_url) as session:
        ensure_schema(session)
        dossier = service.get(session, dossier_id, for_update=True)
        if dossier.flow != "actes" or not dossier.idacte:
            raise ValueError(f"le dossier {dossier_id} n'est pas un acte transmis : rien à annuler")
        existing = session.execute(
            select(ActesEnvoi).where(ActesEnvoi.dossier_id == dossier.id, ActesEnvoi.kind == "Annulation",
                                     ActesEnvoi.status != "refuse")
        ).scalars().first()
        if existing is not None:
            return existing.id, False
        if dossier.state not in ANNULABLE:
            raise ValueError(f"l'acte du dossier {dossier_id} est « {dossier.state} » : seule la transmission d'un "
                             "acte transmis ou acquitté peut être annulée")
        if not motif:
            raise ValueError("indiquez le motif de l'annulation")
        coll = settings.config.collectivite(dossier.collectivite)
        today = paris_today()
        serial = _next_serial(session, coll.siren, today.strftime("%Y%m%d"))
        tx = build_annulation(dossier.idacte, coll, serial=serial, trigram=settings.config.trigram, day=today)
        art = service.attach(session, store, dossier, kind="envoi_6-1", name=tx.archive_name,
                             data=tx.archive_bytes, media_type="application/gzip")
        envoi = ActesEnvoi(dossier_id=dossier.id, idacte=dossier.idacte, kind="Annulation", code="6-1",
                           name=tx.archive_name, message_name=tx.message_name, sha256=art.sha256, actor=actor[:128],
                           motif=motif, status="prepare", prepared_at=service.now())
        session.add(envoi)
        session.flush()
        service.note(session, dossier, event="annulation_demandee", actor=actor,
                     message=f"Annulation de la transmission de l'acte {dossier.idacte} demandée par {actor} : "
                             f"{motif}.", details={"motif": motif})
        return envoi.id, True


# --------------------------------------------------------------------------------------------- acknowledgments
def record_acknowledgment(session: Session, dossier: Dossier, msg) -> ActesEnvoi | None:
    """ARPieceComplementaire (3-5), ARReponseRejetLettreObservations (4-5), ARAnnulation (6-2): the
    matching answer we sent is acknowledged. Returns it (None when nothing matches)."""
    ensure_schema(session)
    kinds = ACKNOWLEDGES.get(msg.kind, ())
    q = select(ActesEnvoi).where(ActesEnvoi.dossier_id == dossier.id, ActesEnvoi.kind.in_(kinds),
                                 ActesEnvoi.status.in_(["transmis", "prepare"]))
    rows = session.execute(q.order_by(ActesEnvoi.id)).scalars().all()
    if msg.date_courrier_pref is not None and msg.kind != "ARAnnulation":
        dated = [e for e in rows if e.courrier_id and (c := session.get(PrefectureCourrier, e.courrier_id))
                 and c.date_courrier == msg.date_courrier_pref]
        rows = dated or rows
    if not rows:
        return None
    envoi = rows[0]
    envoi.status, envoi.acknowledged_at = "acquitte", service.now()
    return envoi


def envoi_by_message_name(session: Session, names: list[str]) -> ActesEnvoi | None:
    ensure_schema(session)
    if not names:
        return None
    return session.execute(select(ActesEnvoi).where(ActesEnvoi.message_name.in_(names))
                           .order_by(ActesEnvoi.id.desc())).scalars().first()


def refuse_envoi(session: Session, envoi: ActesEnvoi) -> None:
    """An AnomalieEnveloppe on an answer: it did not reach the préfecture; the letter waits again."""
    envoi.status = "refuse"
    if envoi.courrier_id:
        courrier = session.get(PrefectureCourrier, envoi.courrier_id)
        if courrier is not None and courrier.status == "repondu":
            courrier.status, courrier.answered_at = "attente_reponse", None
