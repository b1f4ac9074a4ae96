"""A dossier's own steps: validation, the parapheur request and decision, signature, transmission.

Each function is idempotent: called again after a crash or a retry, it finds what was already
recorded and carries on from there, and never transmits twice.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from flows.config import Collectivite
from flows.dossier import service, states
from flows.dossier.db import lock, session_scope
from flows.dossier.models import Dossier, EnvelopeSerial
from flows.dossier.store import ArtefactStore
from flows.findings import Report
from flows.pipeline import inbox
from flows.pipeline.send import upload_recorded
from flows.settings import Settings

NATURE_DOC_TYPES = {"DE": "deliberation", "AR": "arrete", "AI": "arrete", "CC": "contrat", "BF": "budget", "AU": "autre"}
DOC_TYPE_LABELS = {
    "deliberation": "Délibération", "arrete": "Arrêté", "contrat": "Contrat", "budget": "Document budgétaire",
    "autre": "Acte", "pes": "Flux PES V2", "pes_depense": "PES dépense", "pes_recette": "PES recette",
}


@dataclass
class StepOutcome:
    dossier_id: str
    state: str
    proceed: bool
    message: str = ""
    details: dict = field(default_factory=dict)


def _original_path(store: ArtefactStore, dossier: Dossier, tmp_dir: Path) -> Path:
    local = store.local_path(dossier.sha256)
    if local is not None and local.exists():
        return local
    tmp_dir.mkdir(parents=True, exist_ok=True)
    path = tmp_dir / f"{dossier.sha256}.bin"
    if not path.exists():
        path.write_bytes(store.get(dossier.sha256))
    return path


def _as_agent_sees(report, path: Path, shown: str) -> None:
    """The report names the file as the agent dropped it (saint-sever/helios/PES_x.xml), never the
    server path the validators read (the store, a temporary copy)."""
    hidden = sorted({str(path), str(path.resolve()), path.name}, key=len, reverse=True)

    def clean(text):
        if not isinstance(text, str):
            return text
        for h in hidden:
            text = text.replace(h, shown)
        return text

    report.file = shown
    report.findings[:] = [dataclasses.replace(f, message=clean(f.message), fix=clean(f.fix), place=clean(f.place),
                                              value=clean(f.value)) for f in report.findings]


# --------------------------------------------------------------------------------------------- validation
def validate(settings: Settings, dossier_id: str) -> StepOutcome:
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as session:
        dossier = service.get(session, dossier_id, for_update=True)
        if dossier.state != "recu":  # already validated (retry after a crash)
            return StepOutcome(dossier.id, dossier.state, dossier.state not in _STOPPED)
        coll = settings.config.collectivite(dossier.collectivite)
        path = _original_path(store, dossier, settings.work_dir / "tmp")
        extra_files: dict[str, bytes] = {}
        if dossier.flow == "helios":
            report, quality = _validate_pes(session, dossier, coll, path)
            if quality is not None:
                html = quality.to_html().encode("utf-8")
                service.attach(session, store, dossier, kind="quality_report_html", name="rapport-qualite-tiers.html",
                               data=html, media_type="text/html")
                service.attach(session, store, dossier, kind="quality_report_json", name="rapport-qualite-tiers.json",
                               data=quality.to_json().encode("utf-8"), media_type="application/json")
                extra_files[".rapport-qualite.html"] = html
        else:
            report = _validate_acte(session, dossier, coll, path)
        _as_agent_sees(report, path, inbox.agent_path(dossier.collectivite, dossier.flow, dossier.original_name))
        service.attach(session, store, dossier, kind="validation_report", name="rapport-validation.json",
                       data=report.to_json().encode("utf-8"), media_type="application/json")
        if report.ok:
            warnings = f" ({len(report.warnings)} avertissement(s))" if report.warnings else ""
            service.transition(session, dossier, "valide", message=f"Document valide{warnings}.",
                               details={"warnings": [w.rule for w in report.warnings]})
            return StepOutcome(dossier.id, "valide", True)
        text = report.to_text()
        service.transition(
            session, dossier, "refuse_validation",
            message=f"Document refusé : {len(report.errors)} erreur(s). " + "; ".join(
                f"{f.rule} : {f.message}" for f in report.errors[:5]),
            details={"errors": [f.rule for f in report.errors]},
        )
        explanation = (
            f"Votre document « {inbox.agent_path(dossier.collectivite, dossier.flow, dossier.original_name)} » "
            f"a été refusé par demat (dossier {dossier.id}).\n"
            "Le fichier original est conservé à côté de ce message.\n"
            "Corrigez les points ci-dessous puis déposez le fichier corrigé dans le même dossier.\n\n" + text
        )
        inbox.reject_beside(settings.inbox_root, dossier.collectivite, dossier.flow, dossier.original_name,
                            store.get(dossier.sha256), explanation, extra_files, key=dossier.id)
        return StepOutcome(dossier.id, "refuse_validation", False, text)


_STOPPED = {s for s, st in states.STATES.items() if st.final}


def _known(session, column, dossier: Dossier) -> set[str]:
    rows = session.execute(
        select(column).where(
            Dossier.collectivite == dossier.collectivite, Dossier.id != dossier.id, column.is_not(None),
            Dossier.state.not_in(["refuse_validation", "rejete_parapheur", "refuse_etat", "parapheur_expire"]),
        )
    ).scalars()
    return set(rows)


def _validate_pes(session, dossier: Dossier, coll: Collectivite, path: Path):
    from flows.findings import Finding
    from flows.helios.validate import validate_pes_with_tiers

    report, tiers_rows = validate_pes_with_tiers(path, known_nomfics=_known(session, Dossier.nomfic, dossier))
    s = report.summary
    dossier.nomfic = s.get("nomfic")
    dossier.montant = str(s.get("montant_total")) if s.get("montant_total") is not None else None
    idcoll = s.get("idcoll") or ""
    dossier.siren = idcoll[:9] or None
    dossier.objet = f"PES {s.get('nomfic', '')} : {s.get('bordereaux', '?')} bordereau(x), {s.get('pieces', '?')} pièce(s)"
    dossier.extra = {**(dossier.extra or {}), "bordereaux": s.get("identifiants_bordereaux", [])}
    if dossier.siren:  # the PES_Retour matching reads this index (flows.pipeline.helios_returns)
        from flows.pipeline.helios_returns import index_dossier

        index_dossier(session, dossier)
    if idcoll and idcoll != coll.siret:
        report.add(Finding(
            rule="PES-COLLECTIVITE", layer="metier", place="EnTetePES/IdColl", value=idcoll,
            message=f"Le fichier est émis pour le SIRET {idcoll}, pas pour {coll.name} ({coll.siret}).",
            fix="Déposez le fichier dans le dossier de la collectivité émettrice, ou corrigez IdColl dans l'export.",
        ))
    quality = None
    if report.ok or all(f.layer in ("metier", "qualite") for f in report.errors):
        from flows.quality.gate import run_tiers_gate

        quality = run_tiers_gate(path, engine="auto", rows=tiers_rows)  # the file is read once
        report.extend(quality.findings)
    return report, quality


def _validate_acte(session, dossier: Dossier, coll: Collectivite, path: Path) -> Report:
    from flows.actes.validate import validate_acte_zip
    from flows.pipeline.classification import current_classification

    report = validate_acte_zip(path, coll, known_numeros=_known(session, Dossier.numero_interne, dossier),
                               classification=current_classification(session, coll.siren))
    s = report.summary
    dossier.numero_interne = s.get("numero_interne")
    dossier.objet = s.get("objet")
    dossier.siren = coll.siren
    nature = s.get("nature") or ""
    dossier.doc_type = NATURE_DOC_TYPES.get(str(nature), "autre")
    return report


# --------------------------------------------------------------------------------------------- parapheur
# invisible and direction-changing characters (a file name "facture\u202efdp.exe" is displayed "factureexe.pdf")
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_MD_SPECIAL = frozenset(string.punctuation)  # CommonMark: every ASCII punctuation may be backslash-escaped


def plain_text(value, limit: int = 500) -> str:
    """One line of user text for a plain-text field: no control, invisible or bidi characters, bounded."""
    text = " ".join(_INVISIBLE.sub(" ", str(value or "")).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# remark-gfm links bare URLs and e-mail addresses in the text *after* escapes are resolved, so escaping is
# not enough there: an invisible WORD JOINER breaks "://", "www." and "@" (the text still reads the same)
_AUTOLINK = re.compile(r"(?i)(?<=:)(?=//)|(?<=www)(?=\.)|(?=@)")


def md_text(value, limit: int = 500) -> str:
    """User text for a Markdown field (Airflow's HITL body, run notes): shown as typed, never as a link,
    image, heading, HTML or autolink (every ASCII punctuation is escaped; bare URLs and addresses broken)."""
    text = _AUTOLINK.sub("\u2060", plain_text(value, limit))
    return "".join(f"\\{c}" if c in _MD_SPECIAL else c for c in text)


def human_steps(coll: Collectivite, dossier: Dossier) -> list:
    """The circuit's VISA and SIGNATURE steps for this dossier, in order (AUTO steps need nobody)."""
    circuit = coll.circuit(dossier.doc_type or ("pes" if dossier.flow == "helios" else "acte"))
    return [s for s in circuit if s.kind != "AUTO"]


def has_parapheur(settings: Settings, dossier_id: str) -> bool:
    """Whether someone must answer for this dossier (its circuit has a VISA or SIGNATURE step)."""
    with session_scope(settings.database_url) as session:
        dossier = service.get(session, dossier_id)
        return bool(human_steps(settings.config.collectivite(dossier.collectivite), dossier))


def _parapheur(dossier: Dossier) -> dict:
    """The circuit's progress, kept on the dossier: asked steps and recorded decisions."""
    return dict((dossier.extra or {}).get("parapheur") or {})


def _save_parapheur(dossier: Dossier, progress: dict) -> None:
    dossier.extra = {**(dossier.extra or {}), "parapheur": progress}  # a new dict: SQLAlchemy sees the change


@dataclass
class ParapheurRequest:
    """What the parapheur task must do for one step of the circuit.

    action "ask": park and wait for `assigned_users`; "approved": this step is already decided
    (a retry after a crash) or there is no human step left; "stop": the dossier is not in the
    parapheur any more (rejected, expired, invalid).
    """

    action: str
    step: int = 1
    steps: int = 0
    subject: str = ""
    body: str = ""
    assigned_users: list[dict] = field(default_factory=list)
    deadline_days: int = 30
    step_kind: str = "SIGNATURE"
    official: str | None = None

    @property
    def proceed(self) -> bool:
        return self.action != "stop"

    @property
    def last(self) -> bool:
        """No human step after this one: the next task is the signature."""
        return self.step >= self.steps


def _respondents(coll: Collectivite, step) -> tuple[list[str], str, str | None]:
    if step.kind == "SIGNATURE":
        official = coll.official(step.official)
        return list(official.users), f"{official.name} ({official.role})", official.id
    return list(step.users), ", ".join(step.users), None


def parapheur_request(settings: Settings, dossier_id: str, *, step: int = 1,
                      operators: list[str] = ()) -> ParapheurRequest:
    """Put the dossier at step `step` (1-based) of its circuit and say who must answer, with what to show."""
    with session_scope(settings.database_url) as session:
        dossier = service.get(session, dossier_id, for_update=True)
        coll = settings.config.collectivite(dossier.collectivite)
        circuit = human_steps(coll, dossier)
        n = len(circuit)
        if dossier.state not in ("valide", "au_parapheur"):
            return ParapheurRequest(action="stop", step=step, steps=n)
        progress = _parapheur(dossier)
        if step > n:  # no human step (automatic circuit) or none left
            return ParapheurRequest(action="approved", step=step, steps=n)
        if str(step) in progress.get("decisions", {}):
            return ParapheurRequest(action="approved", step=step, steps=n)
        current = circuit[step - 1]
        users, who, official_id = _respondents(coll, current)
        users += [u for u in operators if u not in users]
        kind = DOC_TYPE_LABELS.get(dossier.doc_type, "Document")
        what = "Signature" if current.kind == "SIGNATURE" else "Visa"
        # Airflow shows the subject as plain text and renders the body as Markdown: user texts (objet, file
        # name, numbers, names) are neutralised there, so an objet "[Signer](https://evil.example)" stays text
        subject = plain_text(f"{what} ({step}/{n}) — {kind} de {coll.name} : "
                             f"{dossier.objet or dossier.original_name}", 250)
        lines = [
            f"**Collectivité** : {md_text(coll.name)}",
            f"**Type** : {md_text(kind)}",
            f"**Objet** : {md_text(dossier.objet) or '—'}",
            f"**Fichier** : {md_text(dossier.original_name)}",
            f"**Dossier** : {md_text(dossier.id)}",
        ]
        if dossier.montant:
            lines.append(f"**Montant** : {md_text(dossier.montant)} €")
        if dossier.idacte or dossier.numero_interne:
            lines.append(f"**Numéro** : {md_text(dossier.numero_interne or dossier.idacte)}")
        for i, done in sorted(progress.get("decisions", {}).items()):
            lines.append(f"Étape {md_text(i)} : {md_text(done['label'])} par {md_text(done['actor'])} "
                         f"le {md_text(done['at'])}")
        lines.append(f"\nÉtape {step}/{n} ({what.lower()}) : {md_text(who)}. En cas de rejet, indiquez le motif.")
        message = f"Étape {step}/{n} du parapheur ({what.lower()}) : en attente de {who}."
        details = {"users": users, "step": step, "steps": n, "kind": current.kind}
        if dossier.state == "valide":
            service.transition(session, dossier, "au_parapheur", message=f"Soumis au parapheur. {message}",
                               details=details)
        elif step not in progress.get("asked", []):
            service.note(session, dossier, event="parapheur_etape", message=message, details=details)
        if step not in progress.get("asked", []):
            progress["asked"] = [*progress.get("asked", []), step]
            _save_parapheur(dossier, progress)
        return ParapheurRequest(
            action="ask", step=step, steps=n, subject=subject, body="\n\n".join(lines),
            assigned_users=[{"id": u, "name": u} for u in users], deadline_days=current.deadline_days,
            step_kind=current.kind, official=official_id,
        )


APPROVE = "Approuver"
REJECT = "Rejeter"


def record_decision(settings: Settings, dossier_id: str, decision: dict, *, step: int = 1) -> ParapheurRequest:
    """Apply one step's answer (as returned by the HITL operator) to the dossier.

    Returns what comes next: "approved" (move on; `last` says whether the signature follows) or
    "stop" (rejected, or the dossier left the parapheur meanwhile). Recording twice is harmless.
    """
    chosen = (decision or {}).get("chosen_options") or []
    params = (decision or {}).get("params_input") or {}
    responder = (decision or {}).get("responded_by_user") or {}
    actor = responder.get("name") or responder.get("id") or "inconnu"
    with session_scope(settings.database_url) as session:
        dossier = service.get(session, dossier_id, for_update=True)
        coll = settings.config.collectivite(dossier.collectivite)
        circuit = human_steps(coll, dossier)
        n = len(circuit)
        progress = _parapheur(dossier)
        if dossier.state != "au_parapheur" or step > n:
            return ParapheurRequest(action="stop", step=step, steps=n)
        if str(step) in progress.get("decisions", {}):
            return ParapheurRequest(action="approved", step=step, steps=n)
        current = circuit[step - 1]
        what = "signature" if current.kind == "SIGNATURE" else "visa"
        if REJECT in chosen:
            motif = (params.get("motif") or "").strip() or "aucun motif donné"
            service.transition(session, dossier, "rejete_parapheur", actor=actor,
                               message=f"Rejeté au parapheur par {actor} à l'étape {step}/{n} ({what}) : {motif}.",
                               details={"motif": motif, "step": step, "kind": current.kind})
            return ParapheurRequest(action="stop", step=step, steps=n)
        label = "Signature accordée" if current.kind == "SIGNATURE" else "Visa accordé"
        at = service.now()
        decisions = dict(progress.get("decisions", {}))
        decisions[str(step)] = {"kind": current.kind, "actor": actor, "label": label,
                                "user": responder.get("id"), "at": f"{at:%d/%m/%Y %H:%M} UTC"}
        progress["decisions"] = decisions
        _save_parapheur(dossier, progress)
        service.note(session, dossier, event="approbation", actor=actor,
                     message=f"{label} par {actor} (étape {step}/{n}).",
                     details={"step": step, "kind": current.kind})
        return ParapheurRequest(action="approved", step=step, steps=n)


def parapheur_expired(settings: Settings, dossier_id: str, *, deadline_days: int, step: int = 1) -> StepOutcome:
    """Nobody answered within the step's deadline: the dossier ends in a named error state."""
    with session_scope(settings.database_url) as session:
        dossier = service.get(session, dossier_id, for_update=True)
        if dossier.state != "au_parapheur":
            return StepOutcome(dossier.id, dossier.state, False)
        service.transition(
            session, dossier, "parapheur_expire", event="alerte_parapheur",
            message=(f"Délai du parapheur dépassé à l'étape {step} : aucune réponse en {deadline_days} jour(s). "
                     "Le dossier est arrêté ; redéposez le document pour relancer le circuit."),
            details={"deadline_days": deadline_days, "step": step},
        )
        return StepOutcome(dossier.id, "parapheur_expire", False)


# --------------------------------------------------------------------------------------------- signature
def _signature_step(coll: Collectivite, dossier: Dossier):
    """The step whose official signs: the SIGNATURE step, else an AUTO step naming an official
    (automatic signature with that official's certificate, without anyone answering)."""
    circuit = coll.circuit(dossier.doc_type or ("pes" if dossier.flow == "helios" else "acte"))
    return (next((s for s in circuit if s.kind == "SIGNATURE"), None)
            or next((s for s in circuit if s.kind == "AUTO" and s.official), None))


def sign(settings: Settings, dossier_id: str) -> StepOutcome:
    """Sign once every human step approved: on the official's token, by the server seal, or (legacy) here.

    PES: an enveloped XAdES per bordereau. Acte, as the collectivité configures it
    (`acte_signature`): a PAdES signature inside the PDF, or a detached XAdES sent as the 99_SE
    signature file, or none. Who signs (flows.pipeline.signing, docs/signature.md):
    - a SIGNATURE step of an official who signs on their token: the document the official signed
      through demat-signer (already assembled, verified and attached); without it, nothing is
      signed here and the dossier waits;
    - an AUTO step, or a collectivité with `cachet_serveur: true`: the server seal, in the HSM;
    - an official whose configuration still names a PKCS#12 (`signature: pkcs12`, or `auto` with the
      file present in the certificate store): the legacy server-side signature with it.
    """
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as session:
        dossier = service.get(session, dossier_id, for_update=True)
        coll = settings.config.collectivite(dossier.collectivite)
        circuit = human_steps(coll, dossier)
        if dossier.state not in ("au_parapheur", "valide") or (dossier.state == "valide" and circuit):
            return StepOutcome(dossier.id, dossier.state, dossier.state in ("signe", "transmis"))
        decisions = _parapheur(dossier).get("decisions", {})
        missing = [i for i in range(1, len(circuit) + 1) if str(i) not in decisions]
        if missing:
            return StepOutcome(dossier.id, dossier.state, False, f"étapes sans décision : {missing}")
        step = _signature_step(coll, dossier)
        signer_decision = next((d for d in decisions.values() if d["kind"] == "SIGNATURE"), None)
        actor = (signer_decision or {}).get("actor") or (decisions[str(len(circuit))]["actor"] if circuit else "demat")
        when = f"{datetime.now(UTC):%d/%m/%Y à %H:%M} UTC"
        full = coll.circuit(dossier.doc_type or ("pes" if dossier.flow == "helios" else "acte"))
        signed_doc = dossier.flow == "helios" or coll.acte_signature != "aucune"
        if step is not None and signed_doc:
            done = _sign_document(settings, session, store, coll, dossier, step, circuit, when)
            if isinstance(done, StepOutcome):
                return done
            message, details = done
        elif signed_doc and any(s.kind == "AUTO" for s in full) and _seal(settings) is not None:
            done = _seal_document(settings, session, store, coll, dossier)
            if isinstance(done, StepOutcome):
                return done
            message, details = done
        elif not circuit:
            message = "Circuit sans étape humaine : transmis sans signature électronique."
            details = {"approver": "demat"}
        else:
            message = f"Approuvé pour transmission par {actor} (acte transmis sans signature électronique)."
            details = {"approver": actor}
        service.transition(session, dossier, "signe", actor=actor, message=message, details=details)
        return StepOutcome(dossier.id, "signe", True)


def _seal(settings: Settings):
    from flows.pipeline.signing import seal_config

    return seal_config(settings)


def _sign_document(settings: Settings, session, store: ArtefactStore, coll: Collectivite, dossier: Dossier, step,
                   circuit: list, when: str):
    """(journal message, details) of the signature of this dossier's document, or a StepOutcome that waits."""
    from flows.pipeline.signing import legacy_pkcs12, token_signed

    official = coll.official(step.official)
    if step.kind == "AUTO" or coll.cachet_serveur:
        p12 = legacy_pkcs12(settings, official) if step.kind == "AUTO" else None
        if p12 is None:
            return _seal_document(settings, session, store, coll, dossier, approver=official if step.kind != "AUTO" else None)
        return _sign_pkcs12(settings, session, store, coll, dossier, step, official, p12, when)
    p12 = legacy_pkcs12(settings, official)
    if p12 is not None:
        return _sign_pkcs12(settings, session, store, coll, dossier, step, official, p12, when)
    number = next(i for i, s in enumerate(circuit, 1) if s.kind == "SIGNATURE")
    done = token_signed(dossier, number)
    kind = "signed" if dossier.flow == "helios" or coll.acte_signature == "pades" else "signature"
    art = service.artefact(dossier, kind)
    if done is None or art is None or art.sha256 != done["sha256"]:
        service.wait(session, dossier, f"En attente de la signature sur le support de {official.name} "
                                       f"({official.role}) : l'approbation seule ne suffit pas, l'élu signe avec "
                                       "demat-signer.")
        return StepOutcome(dossier.id, dossier.state, False, "signature sur support attendue")
    how = {"pes": "XAdES, un bordereau par signature", "pdf": "PAdES, signature intégrée au PDF de l'acte",
           "xades": "XAdES détachée de l'acte, transmise comme fichier de signature 99_SE"}[done["kind"]]
    message = (f"Signé électroniquement sur le support de {official.name}, {official.role} ({how} ; certificat "
               f"« {done['subject']} », lot {done['lot']}), le {when}.")
    details = {"signer": official.name, "role": official.role, "official": official.id, "automatique": False,
               "support": True, "certificate_sha256": done["certificate_sha256"], "lot": done["lot"],
               "signed_sha256": done["sha256"]}
    return message, details


def _sign_pkcs12(settings: Settings, session, store: ArtefactStore, coll: Collectivite, dossier: Dossier, step,
                 official, p12: Path, when: str):
    """Legacy fallback: the official's PKCS#12 on the server (configurations that still name one)."""
    password = p12.with_suffix(".pass").read_bytes().strip()
    if dossier.flow == "helios":
        from flows.signature.xades import sign_pes

        signed = sign_pes(store.get(dossier.sha256), p12, password, role=official.role, place=coll.name)
        service.attach(session, store, dossier, kind="signed", name=f"signe-{dossier.original_name}",
                       data=signed, media_type="application/xml")
        how = "XAdES, un bordereau par signature"
    elif coll.acte_signature == "pades":
        from flows.signature.pades import sign_pdf

        name, pdf = _acte_document(store, dossier, settings)
        service.attach(session, store, dossier, kind="signed", name=f"signe-{name}",
                       data=sign_pdf(pdf, p12, password, role=official.role, place=coll.name),
                       media_type="application/pdf")
        how = "PAdES, signature intégrée au PDF de l'acte"
    else:
        from flows.signature.detached import sign_detached

        name, pdf = _acte_document(store, dossier, settings)
        signature = sign_detached(pdf, p12, password, role=official.role, name=name, place=coll.name)
        service.attach(session, store, dossier, kind="signature", name=f"{Path(name).stem}-signature.xml",
                       data=signature, media_type="application/xml")
        how = "XAdES détachée de l'acte, transmise comme fichier de signature 99_SE"
    if step.kind == "AUTO":
        message = (f"Signé électroniquement sans intervention (circuit automatique ; {how}) avec le "
                   f"certificat de {official.name}, {official.role}, le {when}.")
    else:
        message = f"Signé électroniquement ({how}) par {official.name}, {official.role}, le {when}."
    details = {"signer": official.name, "role": official.role, "official": official.id,
               "automatique": step.kind == "AUTO", "pkcs12": True}
    return message, details


def _seal_document(settings: Settings, session, store: ArtefactStore, coll: Collectivite, dossier: Dossier,
                   approver=None):
    """The server seal (HSM over PKCS#11) signs; its use is journaled. A wrong HSM PIN is never retried."""
    from flows.signature import seal as seal_mod
    from flows.signature.token import PinLocked, WrongPin

    config = _seal(settings)
    if config is None:
        service.wait(session, dossier, "Signature automatique impossible : aucun cachet serveur (HSM) n'est configuré. "
                                       "Configurez DEMAT_HSM_TOKEN et son code PIN, ou un élu signataire.")
        return StepOutcome(dossier.id, dossier.state, False, "cachet serveur non configuré")
    place = coll.name
    try:
        if dossier.flow == "helios":
            signed, use = seal_mod.seal_pes(store.get(dossier.sha256), config.token, config.pin, place=place,
                                            policy=settings.config.signature.politique_pes)
            service.attach(session, store, dossier, kind="signed", name=f"cachet-{dossier.original_name}",
                           data=signed, media_type="application/xml")
        elif coll.acte_signature == "pades":
            name, pdf = _acte_document(store, dossier, settings)
            signed, use = seal_mod.seal_pdf(pdf, config.token, config.pin, place=place, name=name)
            service.attach(session, store, dossier, kind="signed", name=f"cachet-{name}", data=signed,
                           media_type="application/pdf")
        else:
            from flows.signature.detached import assemble_detached, prepare_detached

            name, pdf = _acte_document(store, dossier, settings)
            cert = seal_mod.seal_certificate(config.token)
            prepared = prepare_detached(pdf, cert, role=seal_mod.SEAL_ROLE, name=name, place=place)
            signed = assemble_detached(prepared, seal_mod._sign_all(config.token, config.pin, prepared)["xades"])
            use = seal_mod._use("pdf", pdf, signed, 1, cert, config.token)
            service.attach(session, store, dossier, kind="signature", name=f"{Path(name).stem}-cachet.xml",
                           data=signed, media_type="application/xml")
    except (WrongPin, PinLocked) as exc:  # never try the HSM's PIN again by a retry
        service.wait(session, dossier, f"Cachet serveur inutilisable : {exc} Corrigez le code PIN du HSM puis "
                                       "relancez la signature.")
        return StepOutcome(dossier.id, dossier.state, False, "code PIN du cachet serveur refusé")
    by = f" après l'approbation de {approver.name}, {approver.role}" if approver is not None else ""
    message = f"Signé par le cachet serveur{by} : {use.summary_fr()}"
    details = {"cachet": use.to_dict(), "automatique": approver is None}
    if approver is not None:
        details |= {"official": approver.id, "approuve_par": approver.name}
    return message, details


def _acte_document(store: ArtefactStore, dossier: Dossier, settings: Settings) -> tuple[str, bytes]:
    from flows.actes.intake import read_submission

    submission = read_submission(_original_path(store, dossier, settings.work_dir / "tmp"))
    return submission.document.name, submission.document.data


# --------------------------------------------------------------------------------------------- transmission
def _next_serial(session, siren: str, day: str) -> int:
    lock(session, f"serial-{siren}-{day}")
    row = session.get(EnvelopeSerial, (siren, day))
    if row is None:
        row = EnvelopeSerial(siren=siren, day=day, last=0)
        session.add(row)
    row.last += 1
    session.flush()
    return row.last


def prepare_transmission(settings: Settings, dossier_id: str, *, trigram: str = "TDT") -> tuple[str, str] | None:
    """Build what will be sent and record it BEFORE sending, so a retry resends the same bytes.

    Returns (remote name, artefact sha256), or None when the dossier is not to be transmitted.
    """
    store = ArtefactStore(settings.store_root)
    with session_scope(settings.database_url) as session:
        dossier = service.get(session, dossier_id, for_update=True)
        if dossier.state not in ("signe", "transmis"):
            return None
        existing = service.artefact(dossier, "transmission")
        if existing is not None:
            return existing.name, existing.sha256
        coll = settings.config.collectivite(dossier.collectivite)
        if dossier.flow == "actes":
            from flows.actes.intake import read_submission
            from flows.actes.transmission import build_transmission

            path = _original_path(store, dossier, settings.work_dir / "tmp")
            submission = read_submission(path)
            signed = service.artefact(dossier, "signed")
            if signed is not None:  # PAdES: the signed PDF replaces the acte
                submission.document = dataclasses.replace(submission.document, data=store.get(signed.sha256))
            signature = service.artefact(dossier, "signature")
            if signature is not None:  # the official's detached signature travels as the 99_SE file
                from flows.actes.model import Document

                submission.annexes.append(Document(signature.name, store.get(signature.sha256), typologie="99_SE"))
            day = datetime.now(UTC).strftime("%Y%m%d")
            serial = _next_serial(session, coll.siren, day)
            from flows.pipeline.classification import current_classification

            tx = build_transmission(submission, coll, serial=serial, trigram=settings.config.trigram,
                                    classification=current_classification(session, coll.siren))
            dossier.idacte = tx.idacte
            name, data = tx.archive_name, tx.archive_bytes
        else:
            signed = service.artefact(dossier, "signed")
            data = store.get(signed.sha256 if signed else dossier.sha256)
            name = f"{dossier.nomfic or dossier.id}.xml" if dossier.nomfic else f"{dossier.id}.xml"
            name = "PES_" + "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        art = service.attach(session, store, dossier, kind="transmission", name=name, data=data,
                             media_type="application/gzip" if name.endswith(".gz") else "application/xml")
        dossier.transmission_name = name
        return name, art.sha256


def mark_transmitted(settings: Settings, dossier_id: str, *, already_there: bool, counterpart: str) -> StepOutcome:
    with session_scope(settings.database_url) as session:
        dossier = service.get(session, dossier_id, for_update=True)
        if dossier.state != "signe":
            return StepOutcome(dossier.id, dossier.state, True)
        dossier.transmitted_at = service.now()
        where = "à la préfecture (@ctes)" if counterpart == "prefecture" else "à la DGFiP (Hélios)"
        note = " (déjà présent chez le destinataire : pas de second envoi)" if already_there else ""
        service.transition(session, dossier, "transmis", message=f"Transmis {where} : {dossier.transmission_name}{note}.",
                           details={"name": dossier.transmission_name, "idacte": dossier.idacte})
        return StepOutcome(dossier.id, "transmis", True)


def transmit(settings: Settings, dossier_id: str, endpoint_factory, upload_dir: str = "depot") -> StepOutcome:
    """Sign-then-send's second half: atomic, idempotent upload then the recorded fact."""
    prepared = prepare_transmission(settings, dossier_id)
    with session_scope(settings.database_url) as session:
        dossier = service.get(session, dossier_id)
        flow, state = dossier.flow, dossier.state
    if prepared is None:
        return StepOutcome(dossier_id, state, False)
    if state == "transmis":
        return StepOutcome(dossier_id, state, True)
    name, sha = prepared
    counterpart = "prefecture" if flow == "actes" else "dgfip"
    uploaded = upload_recorded(settings, dossier_id, counterpart, endpoint_factory, upload_dir, name, sha)
    return mark_transmitted(settings, dossier_id, already_there=not uploaded, counterpart=counterpart)


def summary(settings: Settings, dossier_id: str) -> dict:
    with session_scope(settings.database_url) as session:
        d = service.get(session, dossier_id)
        return json.loads(json.dumps({"id": d.id, "state": d.state, "label": states.label(d.state, d.flow),
                                      "reason": d.reason}, default=str))
