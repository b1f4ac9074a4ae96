"""The business REST API (/demat/api/v1) for the collectivités' software (finance, acts registers).

Authentication: an Airflow JWT (POST /auth/token) in `Authorization: Bearer`. A caller sees and
submits for their own collectivité(s) only. Every error is JSON `{"erreur", "correction"}` in French.
A submitted document is written atomically into the collectivité's inbox, so it becomes a dossier
by exactly the same path as a file dropped by an agent. The actions on a dossier (resubmit, annulation,
reponse, retry) are those of the dossier page, decided by flows.pipeline.actions; they need the
token in the Authorization header (a browser's session cookie is not enough to change a dossier).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from datetime import date as Day
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from demat_airflow.ui.security import Caller, bearer, resolve_caller

MAX_UPLOAD = 512 * 1024 * 1024  # same cap as the inbox (flows.pipeline.ingest.MAX_INBOX_BYTES)
FLUX = {"actes": "actes", "helios": "helios"}
EXTENSIONS = {"actes": (".zip",), "helios": (".xml",)}


class ApiError(Exception):
    def __init__(self, status: int, erreur: str, correction: str) -> None:
        super().__init__(erreur)
        self.status, self.erreur, self.correction = status, erreur, correction


class Erreur(BaseModel):
    erreur: str = Field(description="Ce qui ne va pas, en français")
    correction: str = Field(description="Comment corriger")


class Depot(BaseModel):
    statut: Literal["accepte"] = "accepte"
    dossier_id: str = Field(description="Identifiant du dossier qui sera créé (déterministe : collectivité, flux, "
                                        "jour UTC, sha256)")
    sha256: str
    collectivite: str
    flux: Literal["actes", "helios"]
    nom: str = Field(description="Nom du fichier déposé dans le dossier d'entrée")
    suivi: str = Field(description="URL de suivi du dossier")


class Evenement(BaseModel):
    date: datetime
    evenement: str
    etat: str | None = None
    libelle: str
    acteur: str
    message: str


class DossierEtat(BaseModel):
    id: str
    collectivite: str
    flux: str
    type: str
    etat: str
    libelle: str
    final: bool
    nom: str
    sha256: str
    objet: str | None = None
    montant: str | None = None
    idacte: str | None = None
    nomfic: str | None = None
    numero_interne: str | None = None
    motif: str | None = Field(None, description="Motif du dernier refus, le cas échéant")
    attente: str | None = Field(None, description="Raison d'une attente passagère, le cas échéant")
    cree_le: datetime
    modifie_le: datetime
    transmis_le: datetime | None = None
    acquitte_le: datetime | None = None
    archive_le: datetime | None = None
    historique: list[Evenement] | None = None


class Archive(BaseModel):
    dossier_id: str
    etat: str
    archive: bool
    identifiant_archive: str | None = Field(None, description="Identifiant attribué par le SAE (ArchivalAgencyArchiveUnitIdentifier)")
    identifiant_message: str | None = Field(None, description="MessageIdentifier du bordereau de transfert SEDA")
    archive_le: datetime | None = None


class ListeDossiers(BaseModel):
    dossiers: list[DossierEtat]
    suivant: str | None = Field(None, description="Valeur de « depuis » pour la page suivante, si la liste est tronquée")


class ActionPossible(BaseModel):
    code: str = Field(description="resoumettre, annuler, repondre ou relancer")
    libelle: str
    aide: str
    chemin: str = Field(description="POST sur ce chemin (relatif à /demat/api/v1) pour agir")


class ReponsePossible(BaseModel):
    code: str = Field(description="Code @ctes de la réponse, ex. 3-4")
    libelle: str
    documents: str = Field(description="PDF attendus : aucun, un, au moins un")


class CourrierEnAttente(BaseModel):
    type: str
    libelle: str
    date: Day | None = Field(None, description="Date du courrier de la préfecture (champ date_courrier)")
    reponses: list[ReponsePossible]


class ActionsDossier(BaseModel):
    dossier_id: str
    etat: str
    libelle: str
    actions: list[ActionPossible] = Field(description="Les actions permises maintenant à votre compte")
    courriers: list[CourrierEnAttente] = Field(description="Courriers de la préfecture qui attendent une réponse")
    annulation: str | None = Field(None, description="Statut de l'annulation déjà demandée, le cas échéant")
    version_suivante: str | None = Field(None, description="Version corrigée déjà déposée, le cas échéant")


class ActionResultat(BaseModel):
    statut: Literal["enregistre", "deja_enregistre"] = Field(
        description="deja_enregistre : la même demande avait déjà été faite ; rien n'est refait")
    action: str
    dossier_id: str
    message: str = Field(description="Ce qui a été fait, en français")
    nouveau_dossier_id: str | None = Field(None, description="Resoumission : identifiant du dossier de la version "
                                                             "corrigée (créé dans quelques secondes)")
    envoi: str | None = Field(None, description="Annulation, réponse : nom de l'archive @ctes envoyée à la préfecture")
    etape: str | None = Field(None, description="Relance : étape reprise")
    etat: str | None = None
    suivi: str = Field(description="URL de suivi du dossier concerné")


class DemandeAnnulation(BaseModel):
    motif: str = Field("", description="Motif de l'annulation (obligatoire, 1000 caractères au plus)")


ERRORS = {400: {"model": Erreur}, 401: {"model": Erreur}, 403: {"model": Erreur}, 404: {"model": Erreur},
          422: {"model": Erreur}}
ACTION_ERRORS = ERRORS | {409: {"model": Erreur}, 413: {"model": Erreur}}
ACTION_PATHS = {"resoumettre": "resubmit", "annuler": "annulation", "repondre": "reponse", "relancer": "retry",
                "publier": "publication"}
PYDANTIC_FR = {"missing": "champ obligatoire absent", "json_invalid": "JSON illisible",
               "string_type": "texte attendu", "model_attributes_type": "objet JSON attendu",
               "dict_type": "objet JSON attendu", "int_parsing": "nombre entier attendu",
               "bool_parsing": "booléen attendu (true ou false)", "less_than_equal": "valeur trop grande",
               "greater_than_equal": "valeur trop petite", "less_than": "valeur trop grande",
               "greater_than": "valeur trop petite", "string_too_long": "texte trop long",
               "string_too_short": "texte trop court", "string_pattern_mismatch": "format invalide",
               "int_from_float": "nombre entier attendu", "float_parsing": "nombre attendu",
               "date_from_datetime_parsing": "date invalide (AAAA-MM-JJ)", "datetime_parsing": "date invalide",
               "literal_error": "valeur non prévue", "enum": "valeur non prévue", "list_type": "liste attendue",
               "too_long": "trop d'éléments", "value_error": "valeur invalide", "extra_forbidden": "champ inconnu"}
BOUNDS_FR = {"less_than_equal": "au plus", "less_than": "moins de", "greater_than_equal": "au moins",
             "greater_than": "plus de", "string_too_long": "au plus, en caractères :",
             "string_too_short": "au moins, en caractères :", "string_pattern_mismatch": "attendu :"}


def french_validation(errors) -> str:
    """FastAPI's validation errors, in French: the field, what is wrong, the bound when there is one."""
    parts = []
    for err in list(errors)[:10]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        kind = err.get("type", "")
        text = PYDANTIC_FR.get(kind, "valeur invalide")
        ctx = err.get("ctx") or {}
        bound = next((ctx[k] for k in ("le", "lt", "ge", "gt", "max_length", "min_length", "pattern") if k in ctx), None)
        if bound is not None:
            text += f" ({BOUNDS_FR.get(kind, 'limite')} {bound})"
        parts.append(f"{where or 'requête'} : {text}")
    return " ; ".join(parts) or "requête illisible"


async def api_caller(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None) -> Caller:
    caller = await resolve_caller(request, credentials)
    if caller is None:
        raise ApiError(401, "Authentification requise ou jeton invalide / expiré.",
                       "Obtenez un jeton par POST /auth/token {\"username\", \"password\"} et envoyez-le dans "
                       "l'en-tête « Authorization: Bearer <jeton> ».")
    return caller


ApiCaller = Annotated[Caller, Depends(api_caller)]
# what flows.dossier.service.dossier_id_for produces: collectivité-flux-AAAAMMJJ-empreinte
DossierId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,79}$", max_length=80,
                                description="Identifiant du dossier, ex. saint-sever-actes-20261125-3f2a9c1b0d")]
# a collectivité's slug as the configuration declares it (anything else: a French 422, never the router's 404)
CollSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,79}$", max_length=80,
                               description="Identifiant (slug) de la collectivité, ex. saint-sever")]


async def api_writer(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None) -> Caller:
    """Changing a dossier needs the token in the header: a session cookie alone could be a forged request."""
    if credentials is None:
        raise ApiError(401, "Jeton requis dans l'en-tête Authorization pour agir sur un dossier.",
                       "Obtenez un jeton par POST /auth/token et envoyez « Authorization: Bearer <jeton> » ; le cookie "
                       "de session du navigateur ne suffit pas pour modifier un dossier.")
    return await api_caller(request, credentials)


ApiWriter = Annotated[Caller, Depends(api_writer)]


def _settings():
    from demat_airflow.context import settings

    return settings()


def _visible(session, caller: Caller, dossier_id: str):
    from flows.dossier import queries

    d = queries.get_visible(session, dossier_id, scope=caller.scope_set)
    if d is None:
        raise ApiError(404, f"Dossier « {dossier_id} » introuvable.",
                       "Vérifiez l'identifiant. Un document tout juste déposé devient un dossier en quelques "
                       "secondes : réessayez. Vous ne voyez que les dossiers de votre collectivité.")
    return d


def _etat(d, history: bool = False) -> DossierEtat:
    from flows.dossier import queries, states
    from flows.pipeline.steps import DOC_TYPE_LABELS

    st = states.STATES.get(d.state)
    out = DossierEtat(
        id=d.id, collectivite=d.collectivite, flux=d.flow,
        type="Flux PES V2" if d.flow == "helios" else DOC_TYPE_LABELS.get(d.doc_type or "", "Acte"),
        etat=d.state, libelle=states.label(d.state, d.flow) if st else d.state, final=bool(st and st.final),
        nom=d.original_name, sha256=d.sha256, objet=d.objet, montant=d.montant, idacte=d.idacte, nomfic=d.nomfic,
        numero_interne=d.numero_interne, motif=d.reason, attente=d.waiting_reason, cree_le=d.created_at,
        modifie_le=d.updated_at, transmis_le=d.transmitted_at, acquitte_le=d.acknowledged_at,
        archive_le=d.archived_at,
    )
    if history:
        out.historique = [Evenement(date=e.at, evenement=e.event, etat=e.state, libelle=e.label, acteur=e.actor,
                                    message=e.message) for e in queries.timeline(d)]
    return out


def _parse_since(value: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"Date « depuis » illisible : {value!r}.",
                       "Utilisez le format ISO 8601, par exemple 2026-03-15T08:00:00Z ou 2026-03-15.") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def create_api() -> FastAPI:
    api = FastAPI(
        title="demat : API métier",
        version="1.0.0",
        description=(
            "API des logiciels métier des collectivités : dépôt d'un acte (ZIP) ou d'un flux PES V2 (XML), "
            "suivi de l'état et de l'historique d'un dossier, accusé de réception (ARActe / PES_ACQUIT), "
            "identifiant d'archivage, dossiers modifiés depuis une date.\n\n"
            "Authentification : jeton JWT d'Airflow (POST /auth/token) dans l'en-tête "
            "`Authorization: Bearer`. Chaque compte ne voit que sa collectivité.\n\n"
            "Erreurs : JSON `{\"erreur\": ..., \"correction\": ...}` en français."
        ),
        openapi_url="/openapi.json", docs_url="/docs", redoc_url=None,
    )

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"erreur": exc.erreur, "correction": exc.correction}, status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"erreur": "Requête invalide : " + french_validation(exc.errors()),
                             "correction": "Corrigez les champs cités (voir la documentation /demat/api/v1/docs)."},
                            status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        # raised by FastAPI or Starlette themselves (demat's own refusals are ApiError): their text is English
        texts = {400: ("Corps de la requête illisible (formulaire multipart ou JSON mal formé).",
                       "Envoyez un formulaire multipart/form-data ou un JSON valide (voir /demat/api/v1/docs)."),
                 404: ("Ressource inconnue.", "Vérifiez l'URL (voir /demat/api/v1/docs)."),
                 405: ("Méthode non autorisée sur cette ressource.", "Vérifiez la méthode HTTP (voir /demat/api/v1/docs)."),
                 415: ("Type de contenu non pris en charge.", "Vérifiez l'en-tête Content-Type (voir /demat/api/v1/docs).")}
        erreur, correction = texts.get(exc.status_code, (f"Requête refusée (code {exc.status_code}).",
                                                         "Réessayez ou contactez l'opérateur."))
        return JSONResponse({"erreur": erreur, "correction": correction}, status_code=exc.status_code)

    @api.post("/documents", status_code=202, response_model=Depot, responses=ERRORS | {409: {"model": Erreur}, 413: {"model": Erreur}},
              summary="Déposer un document (acte ZIP ou flux PES V2)")
    def submit(request: Request, caller: ApiCaller,
               collectivite: Annotated[str, Form(description="Identifiant (slug) de la collectivité, ex. saint-sever")],
               flux: Annotated[str, Form(description="actes (ZIP de l'acte) ou helios (PES V2 XML)")],
               fichier: Annotated[UploadFile, File(description="Le document")]) -> Depot:
        from flows.dossier import service
        from flows.dossier.db import session_scope
        from flows.pipeline import inbox
        from flows.pipeline.actions import safe_filename, waiting_in_inbox

        settings = _settings()
        try:
            coll = settings.config.collectivite(collectivite)
        except KeyError:
            coll = None
        if coll is None or not caller.may_see(collectivite):
            raise ApiError(403 if coll is not None else 404, f"Collectivité « {collectivite} » inconnue ou non autorisée "
                           "pour votre compte.", "Utilisez l'identifiant (slug) de votre collectivité, "
                           "par exemple « saint-sever ».")
        if flux not in FLUX:
            raise ApiError(400, f"Flux « {flux} » inconnu.", "Indiquez « actes » (ZIP d'un acte) ou « helios » "
                           "(flux PES V2 XML).")
        if flux not in coll.flows:
            raise ApiError(400, f"Le flux « {flux} » n'est pas ouvert pour {coll.name}.",
                           "Demandez à l'opérateur d'activer ce flux pour votre collectivité.")
        name = safe_filename(fichier.filename or "")
        if not name:
            raise ApiError(400, "Nom de fichier absent ou illisible.", "Envoyez le fichier avec son nom "
                           "(partie multipart « fichier » avec filename).")
        if not name.lower().endswith(EXTENSIONS[flux]):
            want = " ou ".join(EXTENSIONS[flux])
            raise ApiError(400, f"Le fichier « {name} » n'a pas l'extension attendue pour le flux {flux} ({want}).",
                           "Un acte se dépose en ZIP (acte, annexes, métadonnées) ; un flux PES V2 en XML.")
        folder = settings.inbox_root / coll.slug / flux
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".api-{uuid.uuid4().hex}.part"  # ignored by the inbox watcher until renamed
        try:
            try:
                size, sha = inbox.stream_to_file(fichier.file, tmp, MAX_UPLOAD)
            except inbox.TooLarge:
                raise ApiError(413, f"Fichier trop volumineux (plus de {MAX_UPLOAD // (1024 * 1024)} Mio).",
                               "Vérifiez l'export ; découpez un flux PES trop gros en plusieurs fichiers.") from None
            if size == 0:
                raise ApiError(400, "Le fichier est vide.", "Vérifiez l'export puis déposez à nouveau le fichier.")
            from flows.pipeline.ingest import refuse_if_infected  # ClamAV; clamd down: the ingestion holds it

            if (why := refuse_if_infected(settings, coll.slug, flux, name, tmp)) is not None:
                raise ApiError(422, why, "N'ouvrez pas ce fichier ; faites analyser le poste qui l'a produit, puis "
                               "déposez un document sain.")
            with session_scope(settings.database_url) as s:
                existing = service.by_sha(s, sha)
                if existing is not None:
                    raise ApiError(409, f"Doublon : ce contenu a déjà été reçu (dossier {existing.id}, "
                                   f"état {existing.state}).", "Aucune : le document est déjà pris en charge. Pour une "
                                   "version corrigée, modifiez le fichier avant de le déposer.")
            if waiting_in_inbox(settings, coll.slug, flux, sha, size):
                raise ApiError(409, "Doublon : ce contenu vient déjà d'être déposé et attend sa prise en charge.",
                               "Aucune : suivez le dossier déjà annoncé (même identifiant).")
            target = folder / name
            if target.exists() or any(folder.glob(f"{name}*")):
                stem, dot, ext = name.rpartition(".")
                target = folder / f"{stem}-{sha[:8]}{dot}{ext}"
            os.replace(tmp, target)  # atomic: the watcher sees a complete file or nothing
        finally:
            tmp.unlink(missing_ok=True)
        dossier_id = service.dossier_id_for(coll.slug, flux, sha)
        return Depot(dossier_id=dossier_id, sha256=sha, collectivite=coll.slug, flux=flux, nom=target.name,
                     suivi=str(request.url_for("dossier_state", dossier_id=dossier_id)))

    @api.get("/dossiers/{dossier_id}", response_model=DossierEtat, responses=ERRORS,
             summary="État d'un dossier, avec son historique")
    def dossier_state(dossier_id: DossierId, caller: ApiCaller,
                      historique: Annotated[bool, Query(description="Inclure l'historique")] = True) -> DossierEtat:
        from flows.dossier.db import session_scope

        with session_scope(_settings().database_url) as s:
            return _etat(_visible(s, caller, dossier_id), history=historique)

    @api.get("/dossiers/{dossier_id}/historique", response_model=list[Evenement], responses=ERRORS,
             summary="Historique (journal) d'un dossier")
    def dossier_history(dossier_id: DossierId, caller: ApiCaller) -> list[Evenement]:
        from flows.dossier.db import session_scope

        with session_scope(_settings().database_url) as s:
            return _etat(_visible(s, caller, dossier_id), history=True).historique or []

    @api.get("/dossiers/{dossier_id}/accuse", responses=ERRORS | {200: {"content": {"application/xml": {}}}},
             response_class=Response, summary="Accusé de réception de l'État (ARActe ou PES_ACQUIT)")
    def acknowledgment(dossier_id: DossierId, caller: ApiCaller) -> Response:
        from flows.dossier import queries
        from flows.dossier.db import session_scope
        from flows.dossier.store import ArtefactStore

        with session_scope(_settings().database_url) as s:
            d = _visible(s, caller, dossier_id)
            a = queries.latest_artefact(d, queries.ACKNOWLEDGMENT_KINDS)
            if a is None:
                from flows.dossier import states

                raise ApiError(404, f"Pas encore d'accusé de réception pour ce dossier (état : "
                               f"{states.label(d.state, d.flow)}).",
                               "L'accusé arrive après la transmission (quelques minutes à quelques heures) : "
                               "réessayez plus tard ; consultez l'état du dossier pour un éventuel refus.")
            sha, name, media = a.sha256, a.name, a.media_type
        from flows.pipeline.actions import safe_filename

        data = ArtefactStore(_settings().store_root).get(sha)
        return Response(data, media_type=media or "application/xml",
                        headers={"Content-Disposition": f'attachment; filename="{safe_filename(name) or "accuse.xml"}"'})

    @api.get("/dossiers/{dossier_id}/archive", response_model=Archive, responses=ERRORS,
             summary="Identifiant d'archivage au SAE")
    def archive(dossier_id: DossierId, caller: ApiCaller) -> Archive:
        from flows.dossier.db import session_scope

        with session_scope(_settings().database_url) as s:
            d = _visible(s, caller, dossier_id)
            return Archive(dossier_id=d.id, etat=d.state, archive=d.state == "archive", identifiant_archive=d.archive_id,
                           identifiant_message=d.message_identifier, archive_le=d.archived_at)

    @api.get("/dossiers", response_model=ListeDossiers, responses=ERRORS,
             summary="Dossiers modifiés depuis une date (pour synchroniser un logiciel métier)")
    def changed(caller: ApiCaller,
                depuis: Annotated[str, Query(description="Date ISO 8601 (UTC si sans fuseau), ex. 2026-03-15T08:00:00Z")],
                limite: Annotated[int, Query(ge=1, le=1000, description="Nombre maximal de dossiers")] = 200,
                ) -> ListeDossiers:
        from flows.dossier import queries
        from flows.dossier.db import session_scope

        since = _parse_since(depuis)
        with session_scope(_settings().database_url) as s:
            rows = queries.changed_since(s, since, scope=caller.scope_set, limit=limite + 1)
            items = [_etat(d) for d in rows[:limite]]
        nxt = items[-1].modifie_le.isoformat() if len(rows) > limite else None
        return ListeDossiers(dossiers=items, suivant=nxt)

    _action_routes(api)
    _after_ack_routes(api)
    __import__("demat_airflow.ui.signatures", fromlist=["signature_routes"]).signature_routes(api)  # token signatures
    return api


# --------------------------------------------------------------------------------------------- dossier actions
def _action_routes(api: FastAPI) -> None:
    """GET .../actions and the four POSTs: the same decisions and effects as the dossier page."""

    @api.get("/dossiers/{dossier_id}/actions", response_model=ActionsDossier, responses=ERRORS,
             summary="Actions permises sur un dossier, pour votre compte, dans son état actuel")
    def dossier_actions_list(dossier_id: DossierId, caller: ApiCaller) -> ActionsDossier:
        from demat_airflow.ui import dossier_actions
        from flows.dossier import states
        from flows.dossier.db import session_scope

        with session_scope(_settings().database_url) as s:
            d = _visible(s, caller, dossier_id)
            page = dossier_actions.for_page(s, caller, d)
            f = page.facts
            return ActionsDossier(
                dossier_id=d.id, etat=d.state, libelle=states.label(d.state, d.flow),
                actions=[ActionPossible(code=o.code, libelle=o.label, aide=o.help,
                                        chemin=f"/dossiers/{d.id}/{ACTION_PATHS[o.code]}") for o in page.offers],
                courriers=[CourrierEnAttente(type=lt.kind, libelle=lt.label, date=lt.date, reponses=[
                    ReponsePossible(code=c.code, libelle=c.label, documents=c.documents) for c in lt.choices])
                    for lt in f.letters],
                annulation=f.annulation, version_suivante=f.successor)

    @api.post("/dossiers/{dossier_id}/resubmit", status_code=202, response_model=ActionResultat,
              responses=ACTION_ERRORS, summary="Déposer la version corrigée d'un dossier refusé ou rejeté")
    def resubmit(request: Request, dossier_id: DossierId, caller: ApiWriter,
                 fichier: Annotated[UploadFile, File(description="Le document corrigé (ZIP d'acte ou PES V2 XML)")],
                 ) -> ActionResultat:
        """Le fichier devient un nouveau dossier, version suivante de celui-ci, par le même chemin qu'un dépôt
        dans le dossier d'entrée (validation, parapheur...). Un fichier identique au document refusé ou déjà reçu
        est refusé (409)."""
        from demat_airflow.ui import dossier_actions
        from flows.pipeline.actions import RESUBMIT

        return _act(request, caller, dossier_id, RESUBMIT, lambda d, roles: dossier_actions.resubmit(
            caller, d.id, d.collectivite, d.flow, fichier.filename or "", fichier.file, roles))

    @api.post("/dossiers/{dossier_id}/annulation", status_code=202, response_model=ActionResultat,
              responses=ACTION_ERRORS, summary="Demander l'annulation de la transmission d'un acte (6-1)")
    def annulation(request: Request, dossier_id: DossierId, caller: ApiWriter, demande: DemandeAnnulation) -> ActionResultat:
        """Pour un acte transmis ou acquitté. Le message part à la préfecture dans la minute ; son accusé (6-2)
        fait passer le dossier à « annule ». Une seconde demande renvoie la première (statut deja_enregistre)."""
        from demat_airflow.ui import dossier_actions
        from flows.pipeline.actions import ANNUL

        return _act(request, caller, dossier_id, ANNUL,
                    lambda d, roles: dossier_actions.annul(caller, d.id, demande.motif, roles))

    @api.post("/dossiers/{dossier_id}/reponse", status_code=202, response_model=ActionResultat,
              responses=ACTION_ERRORS, summary="Répondre au courrier de la préfecture en attente")
    def reponse(request: Request, dossier_id: DossierId, caller: ApiWriter,
                fichiers: Annotated[list[UploadFile] | None, File(description="PDF de la réponse")] = None,
                reponse: Annotated[str, Form(description="Code @ctes de la réponse (2-2, 3-2, 3-3, 3-4, 4-2, 4-3, "
                                                         "4-4) ; vide : la réponse naturelle au dernier courrier")] = "",
                motif: Annotated[str, Form(description="Motif ou précision (facultatif)")] = "",
                date_courrier: Annotated[str, Form(description="AAAA-MM-JJ : le courrier visé, s'il y en a "
                                                               "plusieurs")] = "",
                ) -> ActionResultat:
        """Réponse à une demande de pièces complémentaires (3-x), à une lettre d'observations (4-x) ou à un
        courrier simple (2-2). Voir GET .../actions pour les courriers en attente et les réponses possibles."""
        from demat_airflow.ui import dossier_actions
        from flows.pipeline.actions import ANSWER

        files = [(f.filename or "", f.file) for f in dossier_actions.real_files(fichiers)]
        return _act(request, caller, dossier_id, ANSWER, lambda d, roles: dossier_actions.answer(
            caller, d.id, files, roles, reponse=reponse, motif=motif, date_courrier=date_courrier))

    @api.post("/dossiers/{dossier_id}/retry", status_code=202, response_model=ActionResultat,
              responses=ACTION_ERRORS | {503: {"model": Erreur}}, summary="Relancer l'étape bloquée (opérateur)")
    def retry(request: Request, dossier_id: DossierId, caller: ApiWriter) -> ActionResultat:
        """Pour un dossier « en erreur », ou arrêté en cours de circuit alors que son run Airflow est terminé :
        le dossier reprend à son étape et son run est relancé dans Airflow. Réservé aux opérateurs."""
        from demat_airflow.ui import dossier_actions
        from flows.pipeline.actions import RETRY

        return _act(request, caller, dossier_id, RETRY, lambda d, roles: dossier_actions.retry(caller, d, roles))


def _after_ack_routes(api: FastAPI) -> None:
    """Issue 20: publication of an acte, its stamped PDF and its accusé de réception PDF."""

    @api.post("/dossiers/{dossier_id}/publication", status_code=202, response_model=ActionResultat,
              responses=ACTION_ERRORS, summary="Publier un acte acquitté (page publique de la collectivité)")
    def publication(request: Request, dossier_id: DossierId, caller: ApiWriter) -> ActionResultat:
        from flows.pipeline import actions

        return _act(request, caller, dossier_id, actions.PUBLISH, lambda d, roles: actions.publish(
            _settings(), d.id, actor=caller.name, roles=roles))

    def _pdf(dossier_id: str, caller: Caller, kinds: tuple[str, ...], absent: str) -> Response:
        from flows.dossier import queries
        from flows.dossier.db import session_scope
        from flows.dossier.store import ArtefactStore
        from flows.pipeline.actions import safe_filename

        with session_scope(_settings().database_url) as s:
            d = _visible(s, caller, dossier_id)
            a = queries.latest_artefact(d, kinds)
            if a is None:
                raise ApiError(404, absent, "Il est produit à l'arrivée de l'accusé de réception de la préfecture "
                               "(ARActe) ; consultez l'historique du dossier.")
            sha, name = a.sha256, a.name
        return Response(ArtefactStore(_settings().store_root).get(sha), media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{safe_filename(name) or "acte.pdf"}"',
                                 "X-Content-Type-Options": "nosniff"})

    @api.get("/dossiers/{dossier_id}/acte-tamponne", response_class=Response, responses=ERRORS,
             summary="Acte tamponné (« Reçu en préfecture le … », « Publié le … »), PDF")
    def stamped(dossier_id: DossierId, caller: ApiCaller) -> Response:
        return _pdf(dossier_id, caller, ("acte_tamponne", "acte_tamponne_publie"), "Pas d'acte tamponné pour ce dossier.")

    def _coll_for(caller: Caller, slug: str):
        try:
            coll = _settings().config.collectivite(slug)
        except KeyError:
            coll = None
        if coll is None or not caller.may_see(slug):
            raise ApiError(404, f"Collectivité « {slug} » inconnue ou non autorisée pour votre compte.",
                           "Utilisez l'identifiant (slug) de votre collectivité, par exemple « saint-sever ».")
        return coll

    @api.get("/collectivites/{slug}/retours-helios", responses=ERRORS,
             summary="PES_Retour et PES_ACQUIT reçus de la DGFiP (rapprochés d'un dossier ou non), avec la marque « lu »")
    def helios_returns(slug: CollSlug, caller: ApiCaller, limite: Annotated[int, Query(ge=1, le=500)] = 100,
                       decalage: Annotated[int, Query(ge=0, le=10**6)] = 0) -> list[dict]:
        from flows.dossier.db import session_scope
        from flows.pipeline import helios_returns as H

        coll = _coll_for(caller, slug)
        with session_scope(_settings().database_url) as s:
            rows = H.list_returns(s, coll.siren, caller.name, limit=limite, offset=decalage)
        return [{**r, "recu_le": r["recu_le"].isoformat(),
                 "telecharger": f"collectivites/{coll.slug}/retours-helios/{r['id']}"} for r in rows]

    @api.get("/collectivites/{slug}/retours-helios/{retour_id}", response_class=Response, responses=ERRORS,
             summary="Télécharger un PES_Retour ou PES_ACQUIT (le marque « lu » pour vous)")
    def helios_return(slug: CollSlug, retour_id: Annotated[int, Path(ge=1, le=2**62)], caller: ApiCaller) -> Response:
        from flows.dossier.db import session_scope
        from flows.dossier.store import ArtefactStore
        from flows.pipeline import helios_returns as H
        from flows.pipeline.actions import safe_filename

        coll = _coll_for(caller, slug)
        with session_scope(_settings().database_url) as s:
            H.ensure_schema(s)
            row = s.get(H.HeliosReturn, retour_id)
            if row is None or row.siren != coll.siren:
                raise ApiError(404, "Retour Hélios introuvable pour cette collectivité.",
                               "Reprenez l'identifiant dans la liste des retours.")
            sha, name = row.sha256, row.name
            H.mark_read(s, retour_id, caller.name)
        return Response(ArtefactStore(_settings().store_root).get(sha), media_type="application/xml",
                        headers={"Content-Disposition": f'attachment; filename="{safe_filename(name) or "retour.xml"}"',
                                 "X-Content-Type-Options": "nosniff"})

    @api.get("/dossiers/{dossier_id}/accuse-reception.pdf", response_class=Response, responses=ERRORS,
             summary="Accusé de réception lisible (PDF)")
    def receipt(dossier_id: DossierId, caller: ApiCaller) -> Response:
        return _pdf(dossier_id, caller, ("accuse_reception",), "Pas d'accusé de réception PDF pour ce dossier.")


def _act(request: Request, caller: Caller, dossier_id: str, action: str, run) -> ActionResultat:
    from demat_airflow.ui import dossier_actions
    from flows.dossier.db import session_scope
    from flows.pipeline.actions import ActionRefused

    try:
        with session_scope(_settings().database_url) as s:
            d = _visible(s, caller, dossier_id)
            roles = dossier_actions.precheck(s, caller, d, action)
        done = run(d, roles)
    except ActionRefused as exc:
        raise ApiError(exc.status, exc.message, exc.fix) from exc
    except dossier_actions.AirflowDown as exc:
        raise ApiError(503, str(exc), "Réessayez dans un moment ; si cela persiste, vérifiez l'API d'Airflow.") from exc
    follow = done.new_dossier_id or done.dossier_id
    return ActionResultat(statut="enregistre" if done.created else "deja_enregistre", action=done.action,
                          dossier_id=done.dossier_id, message=done.message, nouveau_dossier_id=done.new_dossier_id,
                          envoi=done.name if done.action != "resoumettre" else None, etape=done.step, etat=done.state,
                          suivi=str(request.url_for("dossier_state", dossier_id=follow)))
