"""What a person may do on a dossier, and doing it: the one place the UI and the API both ask.

Four actions, each allowed in some states and for some roles (agent of the collectivité, elected
official, platform operator). The UI shows only the allowed ones; the API refuses the others with
the same French reason. Each action goes through the platform's existing path, so nothing new
can transmit twice:

- resubmit a corrected file: written into the collectivité's inbox like any drop (validated etc. by
  the ingestion), after recording which refused dossier it corrects; `link_resubmission`, called by
  the ingestion when it creates the new dossier, makes it the refused one's next version;
- request an annulation (6-1) and answer a letter of the préfecture: checked and recorded now
  (`answers.prepare_annulation` / `answers.prepare_answer`, status "prepare"); the answers batch
  uploads them exactly like a reply dropped in a folder;
- retry a stuck step (operator): a dossier `en erreur` goes back to the state it failed in; the
  caller (the plugin) then clears or re-creates its Airflow run, which this module never touches.

Every action writes a French journal entry naming who did it. Repeating an action is harmless: the
same file, the same answer or a second annulation request returns what was already recorded.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import BigInteger, DateTime, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from flows.dossier import service, states
from flows.dossier.db import ensure_tables, session_scope
from flows.dossier.models import Base, Dossier
from flows.pipeline import answers, inbox, publication
from flows.settings import Settings

AGENT, OFFICIAL, OPERATOR = "agent", "elu", "operateur"
ROLE_LABELS = {AGENT: "agent de la collectivité", OFFICIAL: "élu de la collectivité", OPERATOR: "opérateur"}

RESUBMIT, ANNUL, ANSWER, RETRY = "resoumettre", "annuler", "repondre", "relancer"
PUBLISH = "publier"

MAX_RESUBMIT_BYTES = 512 * 1024 * 1024  # the inbox cap (flows.pipeline.ingest.MAX_INBOX_BYTES)
MAX_ANSWER_BYTES = answers.MAX_ANSWER_BYTES
EXTENSIONS = {"actes": ".zip", "helios": ".xml"}
RESUBMITTABLE = ("refuse_validation", "rejete_parapheur", "parapheur_expire", "refuse_etat")
# States whose progress belongs to the dossier's own Airflow run, and the step that run resumes at.
RUN_STEPS = {"recu": "validation", "valide": "parapheur", "au_parapheur": "parapheur", "signe": "transmission"}
# After `erreur`: the state to go back to, given the state the dossier failed in (states.FLOWS["erreur"]).
RESUME_AFTER_ERROR = {"recu": "recu", "valide": "valide", "au_parapheur": "valide", "signe": "signe",
                      "transmis": "transmis", "acquitte": "acquitte", "depose_sae": "acquitte"}
STEP_LABELS = {"validation": "validation", "parapheur": "parapheur", "transmission": "signature et transmission",
               "collecte": "attente de l'accusé de réception", "archivage": "dépôt au SAE"}
STEP_OF_STATE = {**RUN_STEPS, "transmis": "collecte", "acquitte": "archivage"}
RUN_ACTIVE = ("queued", "running")
RUN_ABSENT = "absent"  # the plugin's word for "Airflow has no run for this dossier"

_NEEDS_ONE_DOCUMENT = {"ReponseCourrierSimple", "RefusPieceComplementaire", "RejetLettreObservations",
                       "ReponseLettreObservations"}


@dataclass(frozen=True)
class ActionSpec:
    code: str
    label: str  # the button an agent reads
    roles: frozenset[str]
    help: str


SPECS: dict[str, ActionSpec] = {s.code: s for s in (
    ActionSpec(RESUBMIT, "Déposer une version corrigée", frozenset({AGENT, OPERATOR}),
               "Le fichier corrigé devient un nouveau dossier, version suivante de celui-ci, et repasse la validation."),
    ActionSpec(ANNUL, "Demander l'annulation", frozenset({AGENT, OFFICIAL, OPERATOR}),
               "Envoie à la préfecture l'annulation de la transmission de l'acte (message 6-1)."),
    ActionSpec(ANSWER, "Répondre à la préfecture", frozenset({AGENT, OFFICIAL, OPERATOR}),
               "Transmet la réponse au courrier de la préfecture en attente (pièces, observations)."),
    ActionSpec(RETRY, "Relancer l'étape bloquée", frozenset({OPERATOR}),
               "Remet le dossier à l'étape où il s'est arrêté et relance son run Airflow."),
    ActionSpec(PUBLISH, "Publier l'acte", frozenset({AGENT, OPERATOR}),
               "Publie l'acte sur la page publique des actes de la collectivité, avec son PDF tamponné "
               "« Publié le … » (publication électronique, obligatoire depuis le 1er juillet 2022)."),
)}

HTTP_STATUS = {"etat": 409, "doublon": 409, "role": 403, "saisie": 422, "taille": 413, "antivirus": 422,
               "attente": 503}


class ActionRefused(ValueError):
    """An action that cannot be done as asked. `kind` says why (see HTTP_STATUS); French texts."""

    def __init__(self, kind: str, message: str, fix: str, field: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.fix, self.field = kind, message, fix, field

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.kind, 409)


# --------------------------------------------------------------------------------------------- table
class ResubmissionRequest(Base):
    """A corrected file announced as the next version of a refused dossier, until the ingestion links it."""

    __tablename__ = "dossier_resoumission"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    previous_id: Mapped[str] = mapped_column(String(80), index=True)
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(128))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    dossier_id: Mapped[str | None] = mapped_column(String(80), nullable=True)  # set when linked


def ensure_schema(session: Session) -> None:
    """This module's table and the answers ones, created if missing (flows.dossier.db.ensure_tables)."""
    answers.ensure_schema(session)
    ensure_tables(session, "actions", [ResubmissionRequest.__table__])


# --------------------------------------------------------------------------------------------- who and what
def roles_for(config, user_id: str, collectivite: str, *, operators: Iterable[str] = (),
              airflow_role: str | None = None) -> frozenset[str]:
    """The caller's roles on a collectivité's dossiers (same rules as queries.visible_collectivites)."""
    if user_id in set(operators) or airflow_role in ("admin", "op"):
        return frozenset({OPERATOR})
    try:
        coll = config.collectivite(collectivite)
    except KeyError:
        return frozenset()
    out = set()
    if user_id in coll.agents:
        out.add(AGENT)
    if any(user_id in o.users for o in coll.officials):
        out.add(OFFICIAL)
    return frozenset(out)


@dataclass(frozen=True)
class AnswerChoice:
    code: str  # @ctes code, e.g. "3-4"
    kind: str
    label: str
    documents: str  # "aucun" | "un" | "au moins un"


@dataclass(frozen=True)
class Letter:
    id: int
    kind: str
    label: str
    date: date | None
    choices: tuple[AnswerChoice, ...]


@dataclass
class Facts:
    """Everything the decision needs, read once."""

    id: str
    flow: str
    state: str
    idacte: str | None
    letters: list[Letter] = field(default_factory=list)  # waiting for an answer, none being sent
    answer_in_progress: bool = False
    annulation: str | None = None  # status of the 6-1 already asked (prepare|transmis|acquitte)
    successor: str | None = None  # the next version, in words (its dossier id, or the file announced)
    next_id: str | None = None  # the next version's dossier id, once it exists
    error_from: str | None = None  # the state the dossier failed in, when `erreur`
    run_state: str | None = None  # the Airflow run's state, when the caller knows it
    published: str | None = None  # publication date (ISO) of an acte already published


@dataclass(frozen=True)
class Offer:
    code: str
    label: str
    help: str


def _choice(kind: str) -> AnswerChoice:
    docs = "aucun" if kind in answers.NO_DOCUMENT else ("un" if kind in _NEEDS_ONE_DOCUMENT else "au moins un")
    return AnswerChoice(answers._code(kind), kind, answers.ANSWER_LABELS[kind], docs)


def facts(session: Session, dossier: Dossier, *, run_state: str | None = None) -> Facts:
    ensure_schema(session)
    out = Facts(dossier.id, dossier.flow, dossier.state, dossier.idacte, run_state=run_state)
    if dossier.flow == "actes":
        envois = session.execute(select(answers.ActesEnvoi).where(answers.ActesEnvoi.dossier_id == dossier.id)
                                 ).scalars().all()
        sending = {e.courrier_id for e in envois if e.status == "prepare" and e.kind in answers.FINAL_ANSWERS}
        out.answer_in_progress = any(e.status == "prepare" and e.kind != "Annulation" for e in envois)
        annul = [e.status for e in envois if e.kind == "Annulation" and e.status != "refuse"]
        out.annulation = annul[-1] if annul else None
        letters = session.execute(
            select(answers.PrefectureCourrier).where(answers.PrefectureCourrier.dossier_id == dossier.id,
                                                     answers.PrefectureCourrier.status == "attente_reponse")
            .order_by(answers.PrefectureCourrier.received_at, answers.PrefectureCourrier.id)).scalars().all()
        out.letters = [Letter(c.id, c.kind, answers.COURRIER_LABELS.get(c.kind, c.kind), c.date_courrier,
                              tuple(_choice(k) for k in answers.ANSWERS_FOR[c.kind]))
                       for c in letters if c.kind in answers.ANSWERS_FOR and c.id not in sending]
    if dossier.flow == "actes" and dossier.state in publication.PUBLISHABLE:
        publication.ensure_schema(session)
        row = session.get(publication.Publication, dossier.id)
        out.published = row.published_on.isoformat() if row is not None else None
    nxt = out.next_id = session.execute(select(Dossier.id).where(Dossier.previous_id == dossier.id)).scalars().first()
    if nxt is None:
        row = session.execute(select(ResubmissionRequest).where(ResubmissionRequest.previous_id == dossier.id)
                              .order_by(ResubmissionRequest.requested_at.desc())).scalars().first()
        nxt = f"fichier « {row.name} » en cours de prise en charge" if row is not None else None
    out.successor = nxt
    if dossier.state == "erreur":
        out.error_from = next((e.state_from for e in reversed(dossier.journal) if e.state_to == "erreur"), None)
    return out


def _label(f: Facts) -> str:
    return states.label(f.state, f.flow)


def refusal(f: Facts, action: str, roles: frozenset[str]) -> ActionRefused | None:
    """Why `action` is not allowed now for these roles (None: allowed). Pure: reads only `f`."""
    spec = SPECS.get(action)
    if spec is None:
        return ActionRefused("saisie", f"Action « {action} » inconnue.", "Actions possibles : " + ", ".join(SPECS) + ".",
                             "action")
    if not roles & spec.roles:
        who = " ou ".join(ROLE_LABELS[r] for r in sorted(spec.roles))
        return ActionRefused("role", f"« {spec.label} » est réservé à : {who}.",
                             "Demandez à une personne habilitée de la collectivité ou à l'opérateur.")
    state = f"Le dossier est « {_label(f)} »"
    if action == RESUBMIT:
        if f.state not in RESUBMITTABLE:
            return ActionRefused("etat", f"{state} : seul un dossier refusé ou rejeté reçoit une version corrigée.",
                                 "Attendez l'issue du dossier, ou demandez son annulation s'il a été transmis.")
        if f.successor:
            return ActionRefused("etat", f"Ce dossier a déjà une version corrigée ({f.successor}).",
                                 "Suivez cette version ; si elle est refusée à son tour, corrigez-la depuis son propre dossier.")
    elif action == ANNUL:
        if f.flow != "actes" or not f.idacte:
            return ActionRefused("etat", "Seule la transmission d'un acte à la préfecture peut être annulée ; "
                                 "ce dossier n'est pas un acte transmis.", "Aucune : rien à annuler.")
        if f.annulation:
            return ActionRefused("etat", f"L'annulation de cet acte est déjà demandée (envoi : {f.annulation}).",
                                 "Aucune : l'accusé de la préfecture (6-2) marquera le dossier « Annulé ».")
        if f.state not in answers.ANNULABLE:
            return ActionRefused("etat", f"{state} : seule la transmission d'un acte transmis ou acquitté peut être "
                                 "annulée.", "Attendez la transmission, ou laissez le dossier en l'état.")
    elif action == ANSWER:
        if f.flow != "actes":
            return ActionRefused("etat", "Ce dossier n'est pas un acte : il ne reçoit pas de courrier de la préfecture.",
                                 "Aucune.")
        if not f.letters:
            why = ("la réponse déjà déposée part à la préfecture dans la minute" if f.answer_in_progress
                   else "aucun courrier de la préfecture n'attend de réponse")
            return ActionRefused("etat", f"Pas de réponse possible : {why}.",
                                 "Attendez un courrier de la préfecture (il apparaît dans l'historique).")
    elif action == PUBLISH:
        if f.flow != "actes":
            return ActionRefused("etat", "Seul un acte se publie.", "Aucune.")
        if f.published:
            return ActionRefused("etat", f"Acte déjà publié le {f.published}.", "Aucune : il figure sur la page publique.")
        if f.state not in publication.PUBLISHABLE:
            return ActionRefused("etat", f"{state} : on ne publie qu'un acte dont la préfecture a accusé réception.",
                                 "Attendez l'accusé de réception (ARActe), puis publiez.")
    elif action == RETRY:
        if f.state == "erreur":
            return None
        if f.state not in RUN_STEPS:
            return ActionRefused("etat", f"{state} : il n'y a pas d'étape bloquée à relancer.",
                                 "La relance vaut pour un dossier « En erreur » ou arrêté en cours de circuit.")
        if f.run_state is None:
            return ActionRefused("etat", f"{state} et l'état de son run Airflow est inconnu : relance impossible à "
                                 "décider.", "Vérifiez que l'API d'Airflow répond, puis réessayez.")
        if f.run_state in RUN_ACTIVE:
            return ActionRefused("etat", f"{state} et son run Airflow est en cours ({f.run_state}) : il n'est pas bloqué.",
                                 "Attendez la fin du run ; relancez seulement s'il échoue.")
    return None


def offers(f: Facts, roles: frozenset[str]) -> list[Offer]:
    return [Offer(s.code, s.label, s.help) for s in SPECS.values() if refusal(f, s.code, roles) is None]


def _check(f: Facts, action: str, roles: frozenset[str]) -> None:
    problem = refusal(f, action, roles)
    if problem is not None:
        raise problem


@dataclass(frozen=True)
class Done:
    """What an action did, in French for the person who asked."""

    action: str
    dossier_id: str
    created: bool  # False: the same request was already recorded (idempotent repeat)
    message: str
    new_dossier_id: str | None = None
    sha256: str | None = None
    name: str | None = None
    step: str | None = None  # retry: the step to resume (see STEP_LABELS)
    state: str | None = None


# --------------------------------------------------------------------------------------------- publication
def publish(settings: Settings, dossier_id: str, *, actor: str, roles: frozenset[str]) -> Done:
    """Publish an acknowledged acte (idempotent: the first publication date stays)."""
    from flows.dossier.store import ArtefactStore

    with session_scope(settings.database_url) as session:
        d = service.get(session, dossier_id, for_update=True)
        f = facts(session, d)
        if f.published and roles & SPECS[PUBLISH].roles:
            return Done(PUBLISH, dossier_id, False, f"Acte déjà publié le {f.published}.")
        _check(f, PUBLISH, roles)
        try:
            row, created = publication.publish(session, ArtefactStore(settings.store_root), d, actor=actor,
                                               config=settings.config)
        except publication.NotPublishable as exc:
            raise ActionRefused("etat", f"Publication impossible : {exc}.", "Corrigez puis recommencez.") from exc
        when = row.published_on.strftime("%d/%m/%Y")
        return Done(PUBLISH, dossier_id, created, f"Acte publié le {when} : il figure sur la page publique des actes "
                    "de la collectivité.", name=row.stamped_name)


# --------------------------------------------------------------------------------------------- uploads
@dataclass(frozen=True)
class Staged:
    path: Path
    name: str
    sha256: str
    size: int


def safe_filename(name: str) -> str:
    base = os.path.basename((name or "").replace("\\", "/")).strip()
    return re.sub(r"[^A-Za-z0-9._() -]", "_", base)[:200].lstrip(".~ ")


def stage_upload(settings: Settings, collectivite: str, flow: str, filename: str, stream: BinaryIO, *,
                 max_bytes: int = MAX_RESUBMIT_BYTES) -> Staged:
    """Copy an uploaded file beside the inbox under a name the watcher ignores, checking name and size."""
    name = safe_filename(filename)
    ext = EXTENSIONS.get(flow, "")
    if not name:
        raise ActionRefused("saisie", "fichier : nom de fichier absent ou illisible.",
                            "Envoyez le fichier avec son nom (partie multipart « fichier » avec filename).", "fichier")
    if not name.lower().endswith(ext):
        raise ActionRefused("saisie", f"fichier : « {name} » n'a pas l'extension attendue ({ext}).",
                            "Un acte se dépose en ZIP (acte, annexes, métadonnées) ; un flux PES V2 en XML.", "fichier")
    folder = settings.inbox_root / collectivite / flow
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".action-{uuid.uuid4().hex}.part"
    try:
        size, sha = inbox.stream_to_file(stream, tmp, max_bytes)
    except inbox.TooLarge:
        raise ActionRefused("taille", f"fichier : trop volumineux (plus de {max_bytes // (1024 * 1024)} Mio).",
                            "Vérifiez l'export ; découpez un flux PES trop gros en plusieurs fichiers.",
                            "fichier") from None
    if size == 0:
        tmp.unlink(missing_ok=True)
        raise ActionRefused("saisie", "fichier : le fichier est vide.", "Vérifiez l'export puis déposez-le à nouveau.",
                            "fichier")
    return Staged(tmp, name, sha, size)


def read_documents(files: Iterable[tuple[str, BinaryIO]], *, max_bytes: int = MAX_ANSWER_BYTES
                   ) -> list[tuple[str, bytes]]:
    """The answer's PDFs, read with a cap on their total size (they travel in one @ctes archive)."""
    out, total = [], 0
    for filename, stream in files:
        name = safe_filename(filename)
        if not name:
            raise ActionRefused("saisie", "fichiers : un document n'a pas de nom.", "Envoyez chaque PDF avec son nom.",
                                "fichiers")
        chunks = []
        while chunk := stream.read(1 << 20):
            total += len(chunk)
            if total > max_bytes:
                raise ActionRefused("taille", f"fichiers : la réponse dépasse {max_bytes // (1024 * 1024)} Mio.",
                                    "Réduisez la taille des PDF (résolution des scans) puis recommencez.", "fichiers")
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            raise ActionRefused("saisie", f"fichiers : « {name} » est vide.", "Retirez-le ou joignez le bon fichier.",
                                "fichiers")
        if not name.lower().endswith(".pdf"):
            raise ActionRefused("saisie", f"fichiers : « {name} » n'est pas un PDF.",
                                "La préfecture n'accepte que des PDF : convertissez le document.", "fichiers")
        out.append((name, data))
    return out


def waiting_in_inbox(settings: Settings, collectivite: str, flow: str, sha: str, size: int) -> bool:
    """Same content already dropped but not yet a dossier (in the inbox or the claimed area)."""
    for folder in (settings.inbox_root / collectivite / flow, inbox.claimed_dir(settings.work_dir, collectivite, flow)):
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            if entry.stat().st_size != size:
                continue
            h = hashlib.sha256()
            with open(entry.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() == sha:
                return True
    return False


def _place(settings: Settings, collectivite: str, flow: str, staged: Staged) -> Path:
    """Atomic rename into the inbox: the watcher sees a complete file or nothing."""
    folder = settings.inbox_root / collectivite / flow
    target = folder / staged.name
    if target.exists() or any(folder.glob(f"{staged.name}*")):
        stem, dot, ext = staged.name.rpartition(".")
        target = folder / f"{stem}-{staged.sha256[:8]}{dot}{ext}"
    os.replace(staged.path, target)
    return target


# --------------------------------------------------------------------------------------------- resubmit
def resubmit(settings: Settings, dossier_id: str, staged: Staged, *, actor: str, roles: frozenset[str]) -> Done:
    """A corrected file for a refused dossier, through the inbox. Consumes `staged` (moved or deleted)."""
    try:
        refuse_if_infected(settings, dossier_id, staged, actor=actor)
        with session_scope(settings.database_url) as session:
            ensure_schema(session)
            prev = service.get(session, dossier_id, for_update=True)
            coll, flow = prev.collectivite, prev.flow
            _forget_lost(session, settings, prev)
            f = facts(session, prev)
            new_id = service.dossier_id_for(coll, flow, staged.sha256)
            same = service.by_sha(session, staged.sha256)
            pending = session.get(ResubmissionRequest, staged.sha256)
            problem = refusal(f, RESUBMIT, roles)
            if problem is not None and (problem.kind == "role" or f.state not in RESUBMITTABLE):
                raise problem
            if same is not None and same.id == prev.id:
                raise ActionRefused("doublon", "Doublon : ce fichier est identique à celui qui a été refusé "
                                    f"(sha256 {staged.sha256[:16]}…).",
                                    "Corrigez le document (voir le motif du refus) avant de le déposer à nouveau.", "fichier")
            if same is not None and same.previous_id == prev.id:
                return Done(RESUBMIT, prev.id, False, f"Version corrigée déjà reçue : dossier {same.id}.",
                            new_dossier_id=same.id, sha256=staged.sha256, name=same.original_name)
            if pending is not None and pending.previous_id == prev.id and same is None:
                if not waiting_in_inbox(settings, coll, flow, staged.sha256, staged.size):
                    _place(settings, coll, flow, staged)  # announced, but the file never arrived (crash)
                return Done(RESUBMIT, prev.id, False, "Version corrigée déjà déposée : prise en charge en cours.",
                            new_dossier_id=new_id, sha256=staged.sha256, name=pending.name)
            if problem is not None:
                raise problem
            if same is not None:
                raise ActionRefused("doublon", f"Doublon : ce contenu a déjà été reçu (dossier {same.id}, état "
                                    f"« {states.label(same.state, same.flow)} »).",
                                    "Aucune : le document est déjà pris en charge.", "fichier")
            if pending is not None or waiting_in_inbox(settings, coll, flow, staged.sha256, staged.size):
                raise ActionRefused("doublon", "Doublon : ce contenu vient déjà d'être déposé et attend sa prise en "
                                    "charge.", "Aucune : suivez le dossier déjà annoncé.", "fichier")
            session.add(ResubmissionRequest(sha256=staged.sha256, previous_id=prev.id, name=staged.name,
                                            size=staged.size, actor=actor[:128], requested_at=service.now()))
            service.note(session, prev, event="resoumission", actor=actor,
                         message=f"Version corrigée « {staged.name} » déposée par {actor} ({staged.size} octets) : "
                                 f"elle repasse la validation et deviendra le dossier {new_id}.",
                         details={"sha256": staged.sha256, "next_id": new_id})
        _place(settings, coll, flow, staged)  # after the commit: the ingestion always finds the link
        return Done(RESUBMIT, dossier_id, True, f"Version corrigée déposée : elle devient le dossier {new_id} "
                    "dans quelques secondes et repasse la validation.", new_dossier_id=new_id,
                    sha256=staged.sha256, name=staged.name)
    finally:
        staged.path.unlink(missing_ok=True)


def refuse_if_infected(settings: Settings, dossier_id: str, staged: Staged, *, actor: str) -> None:
    """ClamAV on an uploaded file before it goes anywhere: infected → quarantine, journal, refusal.
    No verdict (clamd down): the file goes on to the inbox, where the ingestion holds it until scanned."""
    from flows import antivirus

    verdict = antivirus.scan_path(staged.path)
    if not verdict.infected:
        return
    with session_scope(settings.database_url) as session:
        prev = service.get(session, dossier_id, for_update=True)
        coll, flow = prev.collectivite, prev.flow
        kept, _ = antivirus.quarantine(antivirus.quarantine_root(settings.state_dir), coll, flow, staged.name,
                                       staged.path, shown=staged.name, signature=verdict.signature)
        service.note(session, prev, event="antivirus", actor=actor,
                     message=f"Version corrigée « {staged.name} » refusée : l'antivirus y a détecté "
                             f"« {verdict.signature} » ; fichier mis en quarantaine, rien n'a été enregistré.",
                     details={"sha256": staged.sha256, "signature": verdict.signature, "quarantaine": kept.name})
    raise ActionRefused("antivirus", f"fichier : « {staged.name} » refusé, l'antivirus y a détecté "
                        f"« {verdict.signature} » (fichier mis en quarantaine).",
                        "N'ouvrez pas ce fichier ; faites analyser le poste qui l'a produit, puis déposez un document "
                        "sain.", "fichier")


def _forget_lost(session: Session, settings: Settings, prev: Dossier, *, older_than: float = 600) -> None:
    """An announced correction whose file never reached the inbox (crash before the rename) must not
    block the next attempt forever."""
    rows = session.execute(select(ResubmissionRequest).where(ResubmissionRequest.previous_id == prev.id,
                                                             ResubmissionRequest.dossier_id.is_(None))).scalars().all()
    for row in rows:
        at = row.requested_at if row.requested_at.tzinfo else row.requested_at.replace(tzinfo=service.now().tzinfo)
        if (service.now() - at).total_seconds() < older_than or service.by_sha(session, row.sha256) is not None:
            continue
        if waiting_in_inbox(settings, prev.collectivite, prev.flow, row.sha256, row.size):
            continue
        session.delete(row)
        service.note(session, prev, event="resoumission_perdue", actor="demat",
                     message=f"La version corrigée « {row.name} » annoncée par {row.actor} n'est jamais arrivée dans "
                             "le dossier d'entrée : une nouvelle version peut être déposée.")
    session.flush()


def link_resubmission(session: Session, dossier: Dossier) -> bool:
    """Called by the ingestion for each new dossier: if it is an announced correction, link it."""
    ensure_schema(session)
    row = session.get(ResubmissionRequest, dossier.sha256)
    if row is None or row.dossier_id is not None:
        return False
    previous = session.get(Dossier, row.previous_id)
    if previous is None or (previous.collectivite, previous.flow) != (dossier.collectivite, dossier.flow):
        return False
    row.dossier_id = dossier.id
    return service.link_previous(session, dossier, previous, actor=row.actor)


# --------------------------------------------------------------------------------------------- préfecture
def request_annulation(settings: Settings, dossier_id: str, *, actor: str, roles: frozenset[str], motif: str) -> Done:
    motif = (motif or "").strip()
    with session_scope(settings.database_url) as session:
        d = service.get(session, dossier_id)
        f = facts(session, d)
    if f.annulation and roles & SPECS[ANNUL].roles:
        envoi_id, _ = answers.prepare_annulation(settings, dossier_id, actor, motif)  # the recorded one
        return Done(ANNUL, dossier_id, False, f"Annulation déjà demandée (envoi : {f.annulation}).",
                    name=_envoi_name(settings, envoi_id))
    _check(f, ANNUL, roles)
    if not motif:
        raise ActionRefused("saisie", "motif : le motif de l'annulation est obligatoire.",
                            "Indiquez pourquoi la transmission est annulée (il figure au journal).", "motif")
    if len(motif) > 1000:
        raise ActionRefused("saisie", "motif : 1000 caractères au plus.", "Résumez le motif.", "motif")
    try:
        envoi_id, created = answers.prepare_annulation(settings, dossier_id, actor, motif)
    except ValueError as exc:  # the state changed meanwhile
        raise ActionRefused("etat", f"Annulation impossible : {exc}.", "Rechargez le dossier.") from exc
    return Done(ANNUL, dossier_id, created, "Annulation enregistrée : le message 6-1 part à la préfecture dans la "
                "minute ; son accusé (6-2) marquera le dossier « Annulé ».", name=_envoi_name(settings, envoi_id))


def answer_prefecture(settings: Settings, dossier_id: str, *, actor: str, roles: frozenset[str],
                      documents: list[tuple[str, bytes]], reponse: str = "", motif: str = "",
                      date_courrier: str = "") -> Done:
    """Answer the pending letter with these PDFs (`reponse`: an @ctes code, empty for the natural answer)."""
    from flows.actes.model import KIND_BY_CODE

    reponse, motif, date_courrier = (reponse or "").strip(), (motif or "").strip(), (date_courrier or "").strip()
    with session_scope(settings.database_url) as session:
        d = service.get(session, dossier_id)
        f = facts(session, d)
    key = _answer_key(dossier_id, reponse, motif, date_courrier, documents)
    with session_scope(settings.database_url) as session:
        ensure_schema(session)
        done = session.execute(select(answers.ActesEnvoi).where(answers.ActesEnvoi.folder == key)).scalar_one_or_none()
        if done is not None and roles & SPECS[ANSWER].roles:
            return Done(ANSWER, dossier_id, False, f"Réponse déjà enregistrée ({done.name}, envoi : {done.status}).",
                        name=done.name)
    _check(f, ANSWER, roles)
    if date_courrier:
        try:
            date.fromisoformat(date_courrier)
        except ValueError:
            raise ActionRefused("saisie", f"date_courrier : « {date_courrier} » n'est pas une date.",
                                "Format AAAA-MM-JJ, la date du courrier de la préfecture.", "date_courrier") from None
    letters = [c for c in f.letters if not date_courrier or str(c.date or "") == date_courrier]
    if not letters:
        raise ActionRefused("saisie", f"date_courrier : aucun courrier du {date_courrier} n'attend de réponse.",
                            "Dates possibles : " + ", ".join(str(c.date) for c in f.letters) + ".", "date_courrier")
    possible = {ch.code: ch for c in letters for ch in c.choices}
    if reponse:
        kind = KIND_BY_CODE.get(reponse, reponse)
        choice = next((ch for ch in possible.values() if ch.kind == kind), None)
        if choice is None:
            raise ActionRefused("saisie", f"reponse : « {reponse} » ne répond à aucun courrier en attente.",
                                "Réponses possibles : " + ", ".join(f"{c.code} ({c.label})" for c in possible.values())
                                + ".", "reponse")
    else:
        natural = letters[-1].choices
        choice = natural[0] if documents or natural[-1].documents != "aucun" else natural[-1]
    if choice.documents == "aucun" and documents:
        raise ActionRefused("saisie", f"fichiers : la {choice.label} ne porte pas de document.",
                            "Retirez les PDF, ou choisissez une réponse qui en porte.", "fichiers")
    if choice.documents == "un" and len(documents) != 1:
        raise ActionRefused("saisie", f"fichiers : la {choice.label} porte exactement un PDF ({len(documents)} reçu(s)).",
                            "Joignez un seul PDF (regroupez les pages si besoin).", "fichiers")
    if choice.documents == "au moins un" and not documents:
        raise ActionRefused("saisie", f"fichiers : la {choice.label} porte au moins un PDF.", "Joignez les pièces.",
                            "fichiers")
    if len(motif) > 1000:
        raise ActionRefused("saisie", "motif : 1000 caractères au plus.", "Résumez le motif.", "motif")
    digest = hashlib.sha256(key.encode()).hexdigest()
    instructions = {"reponse": choice.code, "motif": motif, "agent": actor}
    if date_courrier:
        instructions["date_courrier"] = date_courrier
    try:
        envoi_id, created = answers.prepare_answer(settings, dossier_id, answers.ReplyFiles(documents, instructions, digest),
                                                   key=key, actor=actor)
    except answers.AnswerWaits as exc:
        raise ActionRefused("attente", f"fichiers : {exc}".strip(), "Réessayez dans quelques minutes : rien n'a été "
                            "enregistré ni envoyé.", "fichiers") from exc
    except answers.AnswerRefused as exc:
        raise ActionRefused("saisie", f"fichiers : réponse non conforme : {exc}", "Corrigez les documents cités "
                            "(PDF lisibles, non chiffrés) puis recommencez.", "fichiers") from exc
    name = _envoi_name(settings, envoi_id)
    if created:
        with session_scope(settings.database_url) as session:
            service.note(session, service.get(session, dossier_id, for_update=True), event="reponse_agent", actor=actor,
                         message=f"Réponse à la préfecture déposée par {actor} : {choice.label}, "
                                 f"{len(documents)} document(s) ({name}) ; envoi à la préfecture dans la minute."
                                 + (f" Motif : {motif}." if motif else ""),
                         details={"code": choice.code, "envoi": name, "documents": [n for n, _ in documents]})
    return Done(ANSWER, dossier_id, created, f"Réponse enregistrée ({choice.label}) : elle part à la préfecture "
                "dans la minute.", name=name)


def _answer_key(dossier_id: str, reponse: str, motif: str, date_courrier: str,
                documents: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256("\0".join((reponse, motif, date_courrier)).encode())
    for name, data in documents:
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return f"action__{dossier_id}__{h.hexdigest()[:32]}"


def _envoi_name(settings: Settings, envoi_id: int) -> str:
    with session_scope(settings.database_url) as session:
        return session.get(answers.ActesEnvoi, envoi_id).name


# --------------------------------------------------------------------------------------------- retry
def retry(settings: Settings, dossier_id: str, *, actor: str, roles: frozenset[str], run_state: str | None) -> Done:
    """Put a stuck dossier back at its step; the caller then clears or re-creates the Airflow run.

    `erreur` goes back to the state it failed in; a dossier whose run ended (or never existed) while it
    was still in a run step only gets a journal entry: its state is already the right one."""
    with session_scope(settings.database_url) as session:
        d = service.get(session, dossier_id, for_update=True)
        f = facts(session, d, run_state=run_state)
        _check(f, RETRY, roles)
        if d.state == "erreur":
            target = RESUME_AFTER_ERROR.get(f.error_from or "", "recu")
            step = STEP_OF_STATE[target]
            service.transition(session, d, target, actor=actor, event="relance",
                               message=f"Relance demandée par {actor} : reprise à l'étape « {STEP_LABELS[step]} » "
                                       f"(le dossier repasse à « {states.label(target, d.flow)} »).",
                               details={"step": step, "from": f.error_from})
        else:
            step = RUN_STEPS[d.state]
            why = "aucun run" if run_state == RUN_ABSENT else f"run {run_state}"
            service.note(session, d, event="relance", actor=actor,
                         message=f"Relance de l'étape « {STEP_LABELS[step]} » demandée par {actor} ({why} dans Airflow).",
                         details={"step": step, "run_state": run_state})
        return Done(RETRY, d.id, True, f"Étape « {STEP_LABELS[step]} » relancée.", step=step, state=d.state)
