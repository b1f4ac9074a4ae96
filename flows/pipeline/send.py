"""Sending a recorded artefact to a counterpart: the one way demat uploads (transmission, SAE deposit).

The bytes were recorded before (so a retry resends the same bytes under the same name); the
upload is atomic and idempotent (False when the file was already there). When the counterpart
cannot be reached (or presents a host key other than the pinned one), the dossier says so in
French, then the error goes up so that the task's retries (with backoff) take over: operators
see the dossier waiting, and why.
"""

from __future__ import annotations

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.store import ArtefactStore
from flows.settings import Settings
from flows.transport.errors import TransientError, TransportError

# with their preposition: « à la préfecture », but « au SAE »
COUNTERPARTS_FR = {"prefecture": "à la préfecture (@ctes)", "dgfip": "à la DGFiP (Hélios)", "sae": "au SAE"}


def waiting_reason(counterpart: str, exc: TransportError) -> str:
    """What a dossier shows (in French) while a counterpart cannot be reached, or refuses us."""
    who = COUNTERPARTS_FR.get(counterpart, f"à {counterpart}")
    if isinstance(exc, TransientError):
        return f"Envoi {who} en attente : {exc}. Nouvel essai automatique ; rien n'est perdu ni envoyé deux fois."
    # a wrong host key, a refused key...: only an operator can fix it
    return (f"Envoi {who} bloqué : {exc}. Rien n'a été envoyé ; l'opérateur de la plateforme doit "
            "vérifier la connexion (clé d'hôte, clé du client) avant de relancer l'étape.")


def upload_recorded(settings: Settings, dossier_id: str, counterpart: str, endpoint_factory, upload_dir: str,
                    name: str, sha256: str) -> bool:
    """Upload the artefact `sha256` as `name`; True if written now, False if it was already there."""
    data = ArtefactStore(settings.store_root).get(sha256)
    try:
        with endpoint_factory(counterpart) as ep:
            return ep.upload_atomic(upload_dir, name, data)
    except TransportError as exc:
        with session_scope(settings.database_url) as session:
            dossier = service.get(session, dossier_id, for_update=True)
            service.wait(session, dossier, waiting_reason(counterpart, exc), details={"counterpart": counterpart, "name": name,
                                                            "error": type(exc).__name__})
        raise
