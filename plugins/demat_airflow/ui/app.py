"""The /demat FastAPI application: server-rendered pages (Jinja2, French) and the business API.

Routes that touch the database are plain `def` (run in the threadpool) so the API server's event
loop stays free, including for our own loopback calls to Airflow's REST API.
"""

from __future__ import annotations

import html
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path as FsPath
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from demat_airflow.ui.security import Caller, bearer, csrf_ok, csrf_token, login_url, resolve_caller

HERE = FsPath(__file__).resolve().parent
PREFIX = "/demat"
templates = Jinja2Templates(directory=str(HERE / "templates"))


class NotLoggedIn(Exception):
    pass


async def page_caller(request: Request,
                      credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None) -> Caller:
    caller = await resolve_caller(request, credentials)
    if caller is None:
        raise NotLoggedIn()
    return caller


CallerDep = Annotated[Caller, Depends(page_caller)]


def _settings():
    from demat_airflow.context import settings

    return settings()


def _session():
    from flows.dossier.db import session_scope

    return session_scope(_settings().database_url)


def _fmt_dt(value: datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%d/%m/%Y %H:%M:%S UTC")


def _fmt_amount(value: str | None) -> str:
    if not value:
        return ""
    from flows.helios.inspect import _euros

    return _euros(value)


def _coll_name(slug: str) -> str:
    try:
        return _settings().config.collectivite(slug).name
    except KeyError:
        return slug


def _state_label(state: str, flow: str | None = None) -> str:
    from flows.dossier import states

    try:
        return states.label(state, flow)
    except KeyError:
        return state


def _doc_type(dossier) -> str:
    from flows.pipeline.steps import DOC_TYPE_LABELS

    if dossier.flow == "helios":
        return "Flux PES V2"
    return DOC_TYPE_LABELS.get(dossier.doc_type or "", "Acte")


templates.env.filters["dt"] = _fmt_dt
templates.env.filters["euros"] = _fmt_amount
templates.env.filters["coll"] = _coll_name
templates.env.filters["duree"] = lambda h: "—" if h is None else (
    f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h".replace(".", ","))
templates.env.globals.update(PREFIX=PREFIX, state_label=_state_label, doc_type=_doc_type, csrf_token=csrf_token)


def _render(request: Request, template: str, caller: Caller, status_code: int = 200, **ctx) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {"caller": caller, **ctx}, status_code=status_code)


def dag_id_for(flow: str) -> str:
    return {"actes": "demat_acte", "helios": "demat_pes"}.get(flow, "demat_pes")


def create_app() -> FastAPI:
    from demat_airflow.ui.dossier_actions import BodyLimit

    app = FastAPI(title="demat", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit)  # before any upload is spooled, for the pages and the API
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    from demat_airflow.ui.api import create_api

    app.mount("/api/v1", create_api())
    from demat_airflow.ui.public import create_public

    app.mount("/public", create_public())  # unauthenticated: published actes only (issue 20)

    @app.exception_handler(NotLoggedIn)
    async def _login(request: Request, exc: NotLoggedIn):
        return RedirectResponse(login_url(request), status_code=303)

    # FastAPI's own 404/405/422 texts are English JSON: the pages answer with the French error page
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        from demat_airflow.ui.api import french_validation

        return _error_page(422, "Adresse invalide : " + french_validation(exc.errors()),
                           "Corrigez le paramètre cité dans l'adresse (ou revenez à la liste des dossiers).")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        texts = {400: ("Le formulaire envoyé est illisible.", "Rechargez la page puis recommencez."),
                 404: ("Cette page n'existe pas.", "Vérifiez l'adresse, ou passez par le menu Dossiers ou Parapheur."),
                 405: (f"La méthode {request.method} n'est pas permise sur cette page.",
                       "Utilisez les liens et les formulaires de demat plutôt qu'un appel direct.")}
        erreur, correction = texts.get(exc.status_code, (f"La demande a été refusée (code {exc.status_code}).",
                                                         "Réessayez ; si cela persiste, contactez l'opérateur."))
        return _error_page(exc.status_code, erreur, correction, getattr(exc, "headers", None))

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/parapheur", status_code=303)

    # ----------------------------------------------------------------------------------- parapheur
    @app.get("/parapheur", response_class=HTMLResponse)
    def parapheur(request: Request, caller: CallerDep, message: str = "", erreur: str = "") -> HTMLResponse:
        from demat_airflow.ui.hitl import AirflowApiError

        try:
            rows = _parapheur_rows(caller)
        except (AirflowApiError, OSError) as exc:  # Airflow's API unreachable: say so, do not crash the page
            rows, erreur = [], f"Impossible de lire les demandes en attente dans Airflow : {exc}"
        return _render(request, "parapheur.html", caller, rows=rows, message=message, erreur=erreur,
                       now=datetime.now(UTC))

    @app.post("/parapheur/decision")
    def decision(request: Request, caller: CallerDep, action: Annotated[str, Form()],
                 selection: Annotated[list[str] | None, Form()] = None,
                 motif: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = "") -> Response:
        from demat_airflow.ui import hitl

        if not csrf_ok(request, caller, csrf):
            return _back(erreur=CSRF_REFUSED)
        selection = selection or []
        motif = motif.strip()
        if action not in ("approuver", "rejeter"):
            return _back(erreur="Action inconnue : choisissez Approuver ou Rejeter.")
        if not selection:
            return _back(erreur="Aucun dossier sélectionné : cochez au moins une ligne.")
        if action == "rejeter" and not motif:
            return _back(erreur="Le motif est obligatoire pour rejeter : indiquez-le puis recommencez.")
        option = "Approuver" if action == "approuver" else "Rejeter"
        try:
            pending = {p.key: p for p in hitl.pending_for(caller.id)}
        except (hitl.AirflowApiError, OSError) as exc:
            return _back(erreur=f"Aucune décision envoyée : Airflow ne répond pas ({exc}). Réessayez.")
        done, skipped = [], []
        for key in selection:
            item = pending.get(key)
            run = key.split("|")[1] if "|" in key else key
            if item is None:
                skipped.append(f"{run} : plus en attente de votre décision")
                continue
            if not item.settled():
                skipped.append(f"{run} : en cours de mise en attente, réessayez dans quelques secondes")
                continue
            if option == "Approuver" and _pending_on_token(item):
                skipped.append(f"{run} : à signer sur le support de l'élu avec demat-signer, pas dans cette page")
                continue
            ok, why = hitl.respond(caller.id, item, option, motif)
            (done if ok else skipped).append(run if ok else f"{run} : {why}")
        verb = "approuvé(s)" if option == "Approuver" else "rejeté(s)"
        msg = f"{len(done)} dossier(s) {verb}."
        return _back(message=msg, erreur=" ; ".join(skipped))

    # ----------------------------------------------------------------------------------- dossiers
    @app.get("/dossiers", response_class=HTMLResponse)
    def dossiers(request: Request, caller: CallerDep, collectivite: str = "", flux: str = "", etat: str = "",
                 du: str = "", au: str = "", idacte: str = "", nomfic: str = "", objet: str = "", q: str = "",
                 page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
                 par_page: Annotated[int, Query(ge=1, le=500)] = 50) -> HTMLResponse:
        from flows.dossier import queries, states

        problems = []
        flt = queries.DossierFilter(collectivite=collectivite or None, flow=flux or None, state=etat or None,
                                    date_from=_date(du, "du", problems), date_to=_date(au, "au", problems),
                                    idacte=idacte or None, nomfic=nomfic or None, objet=objet or None, text=q or None)
        with _session() as s:
            result = queries.search(s, flt, scope=caller.scope_set, page=page, per_page=par_page)
            rows = [_row(d) for d in result.items]
        params = {k: v for k, v in dict(collectivite=collectivite, flux=flux, etat=etat, du=du, au=au, idacte=idacte,
                                        nomfic=nomfic, objet=objet, q=q, par_page=par_page).items() if v}
        colls = [c for c in _settings().config.collectivites if caller.may_see(c.slug)]
        return _render(request, "dossiers.html", caller, rows=rows, result=result, params=params,
                       qs=lambda **kw: urlencode({**params, **kw}), collectivites=colls,
                       states=[(c, st.label) for c, st in states.STATES.items()], erreur=" ; ".join(problems))

    @app.get("/dossiers/{dossier_id}", response_class=HTMLResponse)
    def dossier_page(request: Request, dossier_id: str, caller: CallerDep, message: str = "",
                     erreur: str = "") -> HTMLResponse:
        from demat_airflow.ui import dossier_actions
        from flows.dossier import queries

        with _session() as s:
            d = queries.get_visible(s, dossier_id, scope=caller.scope_set)
            if d is None:
                return _not_found(request, caller, dossier_id)
            ctx = dict(d=_row(d), timeline=queries.timeline(d), message=message, erreur=erreur,
                       actions=dossier_actions.for_page(s, caller, d),
                       artefacts=[dict(id=a.id, kind=a.kind, label=queries.artefact_label(a.kind), name=a.name,
                                       size=a.size, at=a.created_at, sha=a.sha256) for a in d.artefacts],
                       dag_id=dag_id_for(d.flow), run_id=d.run_id, reason=d.reason, waiting=d.waiting_reason,
                       archive_id=d.archive_id, message_identifier=d.message_identifier,
                       transmission_name=d.transmission_name, extra=d)
            return _render(request, "dossier.html", caller, **ctx)

    # ----------------------------------------------------------------------------------- dossier actions
    @app.post("/dossiers/{dossier_id}/resoumettre")
    def ui_resubmit(request: Request, dossier_id: str, caller: CallerDep, csrf: Annotated[str, Form()] = "",
                    fichier: Annotated[UploadFile | None, File()] = None) -> Response:
        from demat_airflow.ui import dossier_actions
        from flows.pipeline.actions import RESUBMIT, ActionRefused

        def run(d, roles):
            if fichier is None or not dossier_actions.real_files([fichier]):
                raise ActionRefused("saisie", "Aucun fichier choisi.", "Choisissez le fichier corrigé puis recommencez.",
                                    "fichier")
            return dossier_actions.resubmit(caller, d.id, d.collectivite, d.flow, fichier.filename or "",
                                            fichier.file, roles)

        return _act(request, caller, dossier_id, csrf, RESUBMIT, run)

    @app.post("/dossiers/{dossier_id}/annuler")
    def ui_annul(request: Request, dossier_id: str, caller: CallerDep, csrf: Annotated[str, Form()] = "",
                 motif: Annotated[str, Form()] = "") -> Response:
        from demat_airflow.ui import dossier_actions
        from flows.pipeline.actions import ANNUL

        return _act(request, caller, dossier_id, csrf, ANNUL,
                    lambda d, roles: dossier_actions.annul(caller, d.id, motif, roles))

    @app.post("/dossiers/{dossier_id}/repondre")
    def ui_answer(request: Request, dossier_id: str, caller: CallerDep, csrf: Annotated[str, Form()] = "",
                  reponse: Annotated[str, Form()] = "", motif: Annotated[str, Form()] = "",
                  fichiers: Annotated[list[UploadFile] | None, File()] = None) -> Response:
        from demat_airflow.ui import dossier_actions
        from flows.pipeline.actions import ANSWER

        code, _, day = reponse.partition("|")  # the form's choice is "<code>|<date of the letter>"
        files = [(f.filename or "", f.file) for f in dossier_actions.real_files(fichiers)]
        return _act(request, caller, dossier_id, csrf, ANSWER,
                    lambda d, roles: dossier_actions.answer(caller, d.id, files, roles, reponse=code, motif=motif,
                                                            date_courrier=day))

    @app.post("/dossiers/{dossier_id}/relancer")
    def ui_retry(request: Request, dossier_id: str, caller: CallerDep, csrf: Annotated[str, Form()] = "") -> Response:
        from demat_airflow.ui import dossier_actions
        from flows.pipeline.actions import RETRY

        return _act(request, caller, dossier_id, csrf, RETRY, lambda d, roles: dossier_actions.retry(caller, d, roles))

    @app.get("/retours-helios", response_class=HTMLResponse)
    def helios_returns_page(request: Request, caller: CallerDep, collectivite: str = "") -> HTMLResponse:
        from flows.pipeline import helios_returns as H

        colls = [c for c in _settings().config.collectivites if "helios" in c.flows and caller.may_see(c.slug)]
        chosen = next((c for c in colls if c.slug == collectivite), colls[0] if colls else None)
        if chosen is None:
            return _render(request, "erreur.html", caller, status_code=404, titre="Retours Hélios",
                           texte="Aucune collectivité avec le flux Hélios n'est visible pour votre compte.")
        with _session() as s:
            rows = H.list_returns(s, chosen.siren, caller.name)
        return _render(request, "retours_helios.html", caller, collectivites=colls, choisie=chosen, retours=rows)

    @app.get("/retours-helios/{slug}/{retour_id}")
    def helios_return_file(slug: str, retour_id: Annotated[int, Path(ge=1, le=2**62)], caller: CallerDep) -> Response:
        from flows.pipeline import helios_returns as H

        try:
            coll = _settings().config.collectivite(slug)
        except KeyError:
            coll = None
        if coll is None or not caller.may_see(slug):
            return Response("Retour introuvable", status_code=404)
        with _session() as s:
            H.ensure_schema(s)
            row = s.get(H.HeliosReturn, retour_id)
            if row is None or row.siren != coll.siren:
                return Response("Retour introuvable", status_code=404)
            sha, name = row.sha256, row.name
            H.mark_read(s, retour_id, caller.name)
        return _file_response(sha, name, "application/xml")

    @app.post("/dossiers/{dossier_id}/publier")
    def ui_publish(request: Request, dossier_id: str, caller: CallerDep, csrf: Annotated[str, Form()] = "") -> Response:
        from flows.pipeline import actions

        return _act(request, caller, dossier_id, csrf, actions.PUBLISH, lambda d, roles: actions.publish(
            _settings(), d.id, actor=caller.name, roles=roles))

    def _act(request: Request, caller: Caller, dossier_id: str, csrf: str, action: str, run) -> Response:
        """The common path of a dossier form: CSRF, visibility, early refusal, the action, back to the page."""
        from demat_airflow.ui import dossier_actions
        from flows.dossier import queries
        from flows.pipeline.actions import ActionRefused

        if not csrf_ok(request, caller, csrf):
            return _render(request, "erreur.html", caller, status_code=403, titre="Formulaire refusé", texte=CSRF_REFUSED)
        try:
            with _session() as s:
                d = queries.get_visible(s, dossier_id, scope=caller.scope_set)
                if d is None:
                    return _not_found(request, caller, dossier_id)
                roles = dossier_actions.precheck(s, caller, d, action)
            done = run(d, roles)
        except ActionRefused as exc:
            return _to_dossier(dossier_id, erreur=f"{exc.message} {exc.fix}")
        except dossier_actions.AirflowDown as exc:
            return _to_dossier(dossier_id, erreur=str(exc))
        return _to_dossier(dossier_id, message=done.message)

    @app.get("/dossiers/{dossier_id}/artefacts/{artefact_id}")
    def artefact(dossier_id: str, artefact_id: Annotated[int, Path(ge=1, le=2**31 - 1)], caller: CallerDep,
                 inline: bool = False) -> Response:
        from flows.dossier import queries

        with _session() as s:
            if queries.get_visible(s, dossier_id, scope=caller.scope_set) is None:
                return Response("Dossier introuvable", status_code=404)
            a = queries.artefact_by_id(s, dossier_id, artefact_id)
            if a is None:
                return Response("Pièce introuvable", status_code=404)
            name, media, sha = a.name, a.media_type, a.sha256
        return _file_response(sha, name, media, inline=inline)

    @app.get("/dossiers/{dossier_id}/apercu", response_class=HTMLResponse)
    def preview(request: Request, dossier_id: str, caller: CallerDep) -> HTMLResponse:
        from flows.dossier import queries

        with _session() as s:
            d = queries.get_visible(s, dossier_id, scope=caller.scope_set)
            if d is None:
                return HTMLResponse("<p>Dossier introuvable.</p>", status_code=404)
            flow, sha, name, did = d.flow, d.sha256, d.original_name, d.id
        if flow == "helios":
            return _render(request, "apercu_pes.html", caller, info=_inspect(sha), name=name, dossier_id=did)
        return _render(request, "apercu_acte.html", caller, name=name, dossier_id=did)

    @app.get("/dossiers/{dossier_id}/document.pdf")
    def acte_pdf(dossier_id: str, caller: CallerDep) -> Response:
        """The acte's main document, inline (the PDF inside the deposited ZIP)."""
        from flows.actes.intake import read_submission
        from flows.dossier import queries
        from flows.dossier.store import ArtefactStore

        with _session() as s:
            d = queries.get_visible(s, dossier_id, scope=caller.scope_set)
            if d is None or d.flow != "actes":
                return Response("Acte introuvable", status_code=404)
            sha = d.sha256
        try:
            sub = read_submission(ArtefactStore(_settings().store_root).get(sha))
        except Exception as exc:  # an unreadable ZIP: the validation report tells why
            return Response(f"Document illisible : {exc}", status_code=422, media_type="text/plain; charset=utf-8")
        doc = sub.document
        media = "application/pdf" if doc.extension == "pdf" else "application/xml"
        return Response(doc.data, media_type=media,
                        headers={"Content-Disposition": f'inline; filename="{_safe_name(doc.name)}"'})

    # ----------------------------------------------------------------------------------- dashboard
    @app.get("/tableau-de-bord", response_class=HTMLResponse)
    def dashboard(request: Request, caller: CallerDep, jours: Annotated[int, Query(ge=1, le=100_000)] = 30,
                  ) -> HTMLResponse:
        from flows.dossier import queries

        jours = max(7, min(jours, 366))
        cfg = _settings().config
        with _session() as s:
            dash = queries.dashboard(s, scope=caller.scope_set, stuck_after_hours=dict(cfg.stuck_after_hours),
                                     days=jours)
        peak = max([n for _, n in dash.per_day] + [1])
        return _render(request, "dashboard.html", caller, dash=dash, peak=peak, jours=jours,
                       stuck_rules=cfg.stuck_after_hours)

    return app


# --------------------------------------------------------------------------------------------- helpers
MAX_PAGE = 100_000  # every numeric query parameter is bounded: ?page=922337203685477580 is a 422, not a 500


def _error_page(status: int, erreur: str, correction: str, headers: dict | None = None) -> HTMLResponse:
    from demat_airflow.ui.limits import error_page

    return HTMLResponse(error_page(status, erreur, correction, prefix=PREFIX), status_code=status, headers=headers)


CSRF_REFUSED = ("Formulaire refusé : il a expiré ou vient d'un autre site. Rechargez la page puis recommencez "
                "(rien n'a été fait).")


def _not_found(request: Request, caller: Caller, dossier_id: str) -> HTMLResponse:
    return _render(request, "erreur.html", caller, status_code=404, titre="Dossier introuvable",
                   texte=f"Le dossier « {dossier_id} » n'existe pas ou n'est pas visible pour vous.")


def _to_dossier(dossier_id: str, **params) -> RedirectResponse:
    from urllib.parse import quote

    params = {k: v[:1500] for k, v in params.items() if v}
    query = f"?{urlencode(params)}" if params else ""
    return RedirectResponse(f"{PREFIX}/dossiers/{quote(dossier_id, safe='')}{query}", status_code=303)


def _back(**params) -> RedirectResponse:
    params = {k: v for k, v in params.items() if v}
    return RedirectResponse(f"{PREFIX}/parapheur?{urlencode(params)}", status_code=303)


def _date(value: str, name: str, problems: list[str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems.append(f"Date « {name} » illisible ({html.escape(value)}) : utilisez le format AAAA-MM-JJ")
        return None


def _row(d) -> dict:
    return dict(id=d.id, collectivite=d.collectivite, flow=d.flow, doc_type=_doc_type(d), state=d.state,
                label=_state_label(d.state, d.flow), objet=d.objet or d.original_name, montant=d.montant,
                idacte=d.idacte, nomfic=d.nomfic, created_at=d.created_at, updated_at=d.updated_at,
                name=d.original_name, reason=d.reason, numero=d.numero_interne, siren=d.siren,
                acknowledged_at=d.acknowledged_at, transmitted_at=d.transmitted_at, archived_at=d.archived_at,
                version=d.version, previous_id=d.previous_id)


def _parapheur_rows(caller: Caller) -> list[dict]:
    from demat_airflow.ui import hitl
    from flows.dossier import queries

    pending = hitl.pending_for(caller.id)
    cfg = _settings().config
    now = datetime.now(UTC)
    rows = []
    with _session() as s:
        found = queries.by_run_ids(s, [p.run_id for p in pending])
        for p in sorted(pending, key=lambda p: p.created_at):
            d = found.get(p.run_id)
            if d is None or not caller.may_see(d.collectivite):
                continue
            deadline = None
            try:
                circuit = cfg.collectivite(d.collectivite).circuit(d.doc_type or ("pes" if d.flow == "helios" else "acte"))
                days = next((st.deadline_days for st in circuit if st.kind == "SIGNATURE"), None)
                if days:
                    from datetime import timedelta

                    deadline = p.created_at + timedelta(days=days)
            except KeyError:
                pass
            rows.append(dict(key=p.key, settled=p.settled(now), ti_state=p.ti_state, asked_at=p.created_at,
                             deadline=deadline, support=_token_step(d, p.task_id), **_row(d)))
    return rows


def _token_step(d, task_id: str) -> dict | None:
    """A SIGNATURE step made on the official's token (flows.pipeline.signing): who signs and the
    demat-signer command; such a step is not approvable in the page (the signature is the decision)."""
    from flows.pipeline import signing

    tail = task_id.rsplit("_", 1)[-1]
    return signing.awaiting_token(_settings(), d, int(tail)) if tail.isdigit() else None


def _pending_on_token(item) -> bool:
    from flows.dossier import queries

    with _session() as s:
        d = queries.by_run_ids(s, [item.run_id]).get(item.run_id)
        return d is not None and _token_step(d, item.task_id) is not None


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.() " else "_" for c in name)[:180] or "fichier"


def _file_response(sha: str, name: str, media: str, *, inline: bool = False) -> Response:
    from flows.dossier.store import ArtefactStore

    store = ArtefactStore(_settings().store_root)
    # only inert formats inline: an HTML artefact (quality report) must never run in our origin
    safe_inline = media in ("application/pdf", "application/xml", "application/json", "text/plain")
    disposition = "inline" if inline and safe_inline else "attachment"
    return Response(store.get(sha), media_type=media or "application/octet-stream",
                    headers={"Content-Disposition": f'{disposition}; filename="{_safe_name(name)}"',
                             "X-Content-Type-Options": "nosniff",
                             "Content-Security-Policy": "sandbox"})


def _inspect(sha: str) -> dict | None:
    from flows.dossier.store import ArtefactStore
    from flows.helios.inspect import inspect_pes

    store = ArtefactStore(_settings().store_root)
    path = store.local_path(sha)
    try:
        if path is not None and path.exists():
            return inspect_pes(path)
        with tempfile.NamedTemporaryFile(suffix=".xml") as tmp:
            tmp.write(store.get(sha))
            tmp.flush()
            return inspect_pes(tmp.name)
    except Exception as exc:  # noqa: BLE001 - the preview says why instead of failing the page
        return {"erreur": str(exc)}
