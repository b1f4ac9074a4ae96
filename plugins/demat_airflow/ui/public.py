"""The public, unauthenticated publication of actes: /demat/public/<collectivité>/actes (page),
/actes.json (feed) and /actes/<IDActe>.pdf (the stamped PDF "Publié le …").

What is shown comes ONLY from the `acte_publication` table (flows.pipeline.publication): IDActe,
nature, objet, decision and publication dates, the stamped PDF. No dossier, journal or artefact
query: an acte never published cannot appear. Bounded: searches are validated (dates, nature,
objet ≤ 100 characters, page ≤ 200), at most 50 results a page, and each address may make
PUBLIC_RATE requests a minute (429 with Retry-After beyond).
"""

from __future__ import annotations

import html
import os
import re
import threading
import time
from collections import OrderedDict, deque
from datetime import date
from functools import lru_cache
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

PAGE_SIZE = 50
NATURES = ("DE", "AR", "AI", "CC", "BF", "AU")
IDACTE_RE = re.compile(r"^[0-9A-Za-z]{3}-\d{9}-\d{8}-[0-9A-Z_]{1,15}-(DE|AR|AI|CC|BF|AU)$")
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
           "Cache-Control": "public, max-age=60"}


# module level: the routes' annotations are strings (PEP 563), resolved against this module
Du = Annotated[date | None, Query()]
Nature = Annotated[str | None, Query(pattern="^(DE|AR|AI|CC|BF|AU)?$")]
Objet = Annotated[str | None, Query(max_length=100)]
Page = Annotated[int, Query(ge=1, le=200)]


class RateLimit:
    """Requests per address in a sliding minute, with a bounded number of addresses remembered."""

    def __init__(self, per_minute: int, max_keys: int = 10000, clock=time.monotonic) -> None:
        self.per_minute, self.max_keys, self.clock = per_minute, max_keys, clock
        self.hits: OrderedDict[str, deque[float]] = OrderedDict()
        self.lock = threading.Lock()

    def retry_after(self, key: str) -> int:
        """0 if the request may go on (and counts it), else seconds to wait."""
        now = self.clock()
        with self.lock:
            q = self.hits.pop(key, None) or deque()
            while q and now - q[0] >= 60:
                q.popleft()
            self.hits[key] = q
            while len(self.hits) > self.max_keys:
                self.hits.popitem(last=False)
            if len(q) >= self.per_minute:
                return max(1, int(60 - (now - q[0])) + 1)
            q.append(now)
            return 0


@lru_cache(maxsize=1)
def _settings():
    from flows.settings import Settings

    return Settings.from_env()


def _coll(slug: str):
    try:
        return _settings().config.collectivite(slug)
    except KeyError:
        return None


def _error(status: int, erreur: str, correction: str, *, json: bool, headers: dict | None = None) -> Response:
    if json:
        return JSONResponse({"erreur": erreur, "correction": correction}, status_code=status,
                            headers={**HEADERS, **(headers or {})})
    body = (f"<!doctype html><html lang='fr'><meta charset='utf-8'><title>Erreur</title><body><h1>Erreur</h1>"
            f"<p>{html.escape(erreur)}</p><p>{html.escape(correction)}</p></body></html>")
    return HTMLResponse(body, status_code=status, headers={**HEADERS, **(headers or {})})


def create_public() -> FastAPI:
    app = FastAPI(title="demat publication", docs_url=None, redoc_url=None, openapi_url=None)
    limiter = RateLimit(int(os.environ.get("DEMAT_PUBLIC_RATE", "60")))

    @app.middleware("http")
    async def _bounded(request: Request, call_next):
        if request.method not in ("GET", "HEAD"):
            return _error(405, "Méthode non permise : cette page se consulte seulement.", "Utilisez un lien ou le "
                          "formulaire de recherche.", json=request.url.path.endswith(".json"))
        wait = limiter.retry_after(request.client.host if request.client else "?")
        if wait:
            return _error(429, "Trop de requêtes depuis votre adresse.", f"Réessayez dans {wait} secondes.",
                          json=request.url.path.endswith(".json"), headers={"Retry-After": str(wait)})
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        fields = ", ".join(str(e.get("loc", ["?"])[-1]) for e in exc.errors())
        return _error(422, f"Critère de recherche invalide : {fields}.", "Dates au format AAAA-MM-JJ, nature parmi "
                      + ", ".join(NATURES) + ", objet de 100 caractères au plus.", json=request.url.path.endswith(".json"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, "Cette page n'existe pas.", "Vérifiez l'adresse.",
                      json=request.url.path.endswith(".json"))

    def search(slug: str, du, au, nature, objet, page):
        from flows.dossier.db import session_scope
        from flows.pipeline.publication import public_list

        with session_scope(_settings().database_url) as s:
            total, rows = public_list(s, slug, du=du, au=au, nature=nature or None, objet=(objet or "").strip() or None,
                                      limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
            items = [{"idacte": r.idacte, "nature": r.nature, "objet": r.objet,
                      "date_decision": r.date_decision.isoformat() if r.date_decision else None,
                      "publie_le": r.published_on.isoformat(),
                      "pdf": f"actes/{r.idacte}.pdf" if r.stamped_sha256 else None} for r in rows]
        return total, items

    @app.get("/{slug}/actes.json")
    def feed(slug: str, du: Du = None, au: Du = None, nature: Nature = None,
             objet: Objet = None, page: Page = 1) -> Response:
        coll = _coll(slug)
        if coll is None:
            return _error(404, "Collectivité inconnue.", "Vérifiez l'adresse.", json=True)
        total, items = search(coll.slug, du, au, nature, objet, page)
        return JSONResponse({"collectivite": coll.name, "total": total, "page": page, "par_page": PAGE_SIZE,
                             "actes": items}, headers=HEADERS)

    @app.get("/{slug}/actes", response_class=HTMLResponse)
    def page_(slug: str, du: Du = None, au: Du = None, nature: Nature = None, objet: Objet = None,
              page: Page = 1) -> Response:
        coll = _coll(slug)
        if coll is None:
            return _error(404, "Collectivité inconnue.", "Vérifiez l'adresse.", json=False)
        total, items = search(coll.slug, du, au, nature, objet, page)
        e = html.escape
        rows = "".join(
            f"<tr><td>{e(i['publie_le'])}</td><td>{e(i['nature'])}</td><td>{e(i['objet'])}</td>"
            f"<td>{e(i['date_decision'] or '')}</td><td>{e(i['idacte'])}</td><td>"
            + (f"<a href='actes/{e(i['idacte'])}.pdf'>PDF</a>" if i["pdf"] else "")
            + "</td></tr>" for i in items) or "<tr><td colspan='6'>Aucun acte publié ne correspond.</td></tr>"
        options = "".join(f"<option value='{n}'{' selected' if n == nature else ''}>{n}</option>" for n in NATURES)
        body = (f"<!doctype html><html lang='fr'><meta charset='utf-8'><title>Actes publiés — {e(coll.name)}</title>"
                "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
                "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style><body>"
                f"<h1>Actes publiés — {e(coll.name)}</h1>"
                f"<form method='get' action='actes'><label>Publié du <input type='date' name='du' value='{e(str(du or ''))}'>"
                f"</label> <label>au <input type='date' name='au' value='{e(str(au or ''))}'></label> "
                f"<label>Nature <select name='nature'><option value=''>toutes</option>{options}</select></label> "
                f"<label>Objet <input name='objet' maxlength='100' value='{e(objet or '')}'></label> "
                "<button>Rechercher</button></form>"
                f"<p>{total} acte(s) publié(s). <a href='actes.json'>Flux JSON</a></p>"
                "<table><tr><th>Publié le</th><th>Nature</th><th>Objet</th><th>Décision du</th><th>IDActe</th>"
                f"<th>Document</th></tr>{rows}</table></body></html>")
        return HTMLResponse(body, headers=HEADERS)

    @app.get("/{slug}/actes/{idacte}.pdf")
    def pdf(slug: str, idacte: str) -> Response:
        from sqlalchemy import select

        from flows.dossier.db import session_scope
        from flows.dossier.store import ArtefactStore
        from flows.pipeline.publication import Publication, ensure_schema

        coll = _coll(slug)
        if coll is None or not IDACTE_RE.match(idacte):
            return _error(404, "Acte introuvable.", "Vérifiez l'adresse.", json=False)
        with session_scope(_settings().database_url) as s:
            ensure_schema(s)
            row = s.execute(select(Publication).where(Publication.collectivite == coll.slug,
                                                      Publication.idacte == idacte)).scalars().first()
            sha = row.stamped_sha256 if row is not None else None
        if not sha:
            return _error(404, "Acte introuvable ou non publié.", "Consultez la liste des actes publiés.", json=False)
        return Response(ArtefactStore(_settings().store_root).get(sha), media_type="application/pdf",
                        headers={**HEADERS, "Content-Disposition": f'inline; filename="{idacte}.pdf"',
                                 "Content-Security-Policy": "sandbox"})

    return app
