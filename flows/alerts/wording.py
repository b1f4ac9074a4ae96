"""What each alert says, in French: what happened, why, and what the reader should do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote
from zoneinfo import ZoneInfo

from flows.dossier import states

PARIS = ZoneInfo("Europe/Paris")
DEFAULT_UI = "http://127.0.0.1:8080"
MAX_TEXT = 2000


@dataclass(frozen=True)
class Wording:
    subject: str  # one line
    text: str  # what happened and why
    action: str  # what to do


def when(at: datetime) -> str:
    """'03/05/2025 à 14:02' in Paris time: what an agent reads."""
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(PARIS).strftime("%d/%m/%Y à %H:%M")


def day(at: datetime) -> str:
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.astimezone(PARIS).strftime("%d/%m/%Y")


def one_line(text: str, limit: int = 250) -> str:
    """No line break can reach a mail header; long subjects are cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ui_base(public_url: str) -> str:
    return (public_url or DEFAULT_UI).rstrip("/")


def dossier_link(public_url: str, dossier_id: str) -> str:
    return f"{ui_base(public_url)}/demat/dossiers/{quote(dossier_id, safe='')}"


def parapheur_link(public_url: str) -> str:
    return f"{ui_base(public_url)}/demat/parapheur"


FLOW_NAMES = {"actes": "acte", "helios": "flux PES V2"}

_REFUSAL_ACTIONS = {
    "refuse_validation": ("Corrigez le document selon le motif ci-dessus puis déposez le fichier corrigé dans le "
                          "même dossier d'entrée. L'explication complète est dans le sous-dossier « rejetes/ »."),
    "rejete_parapheur": ("Prenez connaissance du motif du rejet, corrigez le document avec le service concerné "
                         "et déposez la nouvelle version : le circuit de signature reprendra."),
    "parapheur_expire": ("Personne n'a répondu à temps. Prévenez le signataire, puis déposez de nouveau le "
                         "document pour relancer le circuit."),
    "refuse_sae": ("L'archivage électronique a été refusé. L'opérateur de la plateforme corrige le profil "
                   "d'archivage puis redépose le paquet ; aucune action n'est demandée à la collectivité."),
    "erreur": ("Incident technique : l'opérateur de la plateforme a été prévenu et relancera l'étape. "
               "Ne redéposez pas le document."),
}
_STATE_REFUSAL_ACTIONS = {
    "actes": ("Lisez l'anomalie envoyée par la préfecture (dans le dossier), corrigez l'acte et transmettez-le "
              "de nouveau."),
    "helios": ("Lisez le PES_ACQUIT de la DGFiP (dans le dossier), corrigez le flux dans votre logiciel "
               "financier et déposez-le de nouveau."),
}


def refusal(*, dossier_id: str, flow: str, original_name: str, state: str, message: str, at: datetime) -> Wording:
    label = states.label(state, flow)
    what = FLOW_NAMES.get(flow, "document")
    text = (f"Le {what} « {original_name} » (dossier {dossier_id}) est passé à l'état « {label} » "
            f"le {when(at)}.\nMotif : {clip(message)}")
    if flow == "helios" and state == "refuse_validation":
        text += "\nLe rapport qualité des tiers, s'il a été produit, est joint au dossier."
    action = _STATE_REFUSAL_ACTIONS.get(flow, "") if state == "refuse_etat" else _REFUSAL_ACTIONS.get(state, "")
    return Wording(one_line(f"Dossier {dossier_id} : {label}"), text,
                   action or "Consultez le dossier pour le détail, puis corrigez et redéposez le document.")


COURRIER_NAMES = {
    "CourrierSimple": "un courrier simple",
    "DemandePieceComplementaire": "une demande de pièces complémentaires",
    "LettreObservations": "une lettre d'observations",
    "DefereTA": "un déféré au tribunal administratif",
}


def courrier(*, dossier_id: str, original_name: str, kind: str, message: str, at: datetime) -> Wording:
    what = COURRIER_NAMES.get(kind, "un courrier")
    action = ("Lisez le courrier joint au dossier et répondez depuis la page du dossier (action « Répondre à la "
              "préfecture ») ou en déposant les fichiers dans son dossier de réponse, dans le délai indiqué.")
    if kind == "DefereTA":
        action = "Prévenez sans attendre le service juridique : l'acte est déféré au tribunal administratif."
    return Wording(one_line(f"Dossier {dossier_id} : la préfecture a envoyé {what}"),
                   f"Acte « {original_name} » (dossier {dossier_id}), le {when(at)} : {clip(message)}", action)


def stuck(*, dossier_id: str, original_name: str, message: str, state: str) -> Wording:
    who = "la réponse du SAE" if state == "depose_sae" else "la réponse de l'État"
    action = ("Aucune action n'est nécessaire si la réponse arrive : le dossier reprendra seul. Sinon, "
              "l'opérateur de la plateforme vérifie la passerelle ; la collectivité peut vérifier sur le portail "
              "de la préfecture ou d'Hélios que le document a bien été reçu.")
    return Wording(one_line(f"Dossier {dossier_id} : en attente de {who}"),
                   f"Fichier « {original_name} ». {message}", action)


def deadline(*, dossier_id: str, original_name: str, collectivite: str, step: int, steps: int, kind: str,
             since: datetime, due: datetime, now: datetime) -> Wording:
    what = "signature" if kind == "SIGNATURE" else "visa"
    left = due - now
    if left.total_seconds() <= 0:
        remaining = "le délai est atteint"
    elif left.days >= 1:
        remaining = f"il reste {left.days} jour(s)"
    else:
        remaining = f"il reste {max(1, int(left.total_seconds() // 3600))} heure(s)"
    text = (f"Le document « {original_name} » de {collectivite} (dossier {dossier_id}) attend votre {what} "
            f"(étape {step}/{steps}) depuis le {when(since)}. Échéance : {when(due)} ; {remaining}.")
    action = ("Ouvrez le parapheur et approuvez ou rejetez le document (motif obligatoire en cas de rejet). "
              "Sans réponse à l'échéance, le dossier est arrêté et devra être redéposé.")
    return Wording(one_line(f"Parapheur : {what} attendue pour le dossier {dossier_id} avant le {day(due)}"),
                   text, action)


def certificate(*, subject: str, usage: str, level: str, message: str) -> Wording:
    title = {"expire": "expiré", "illisible": "illisible"}.get(level, "bientôt expiré")
    action = ("Faites renouveler le certificat et installez-le dans le dossier des certificats de la plateforme "
              "(opérateur). Tant qu'il n'est pas remplacé, les signatures ou dépôts qui en dépendent échoueront.")
    return Wording(one_line(f"Certificat {usage} « {subject} » {title}"), message, action)
