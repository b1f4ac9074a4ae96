"""Guards of the whole API server (demat's routes and Airflow's), registered as root middlewares.

- `BodyLimit` counts a request body's bytes as they arrive (chunked or not) and answers 413 in
  French as soon as the route's cap is passed, before authentication and before any route spools
  or parses the body. An upload route (512 Mio) first checks the caller's JWT: an anonymous
  upload is refused with 401 before a byte of it is read. Memory and disk stay bounded.
- `LoginThrottle` counts failed logins on Airflow's /auth/token (and FAB's /auth/login form) per
  user name and per client address, and answers 429 with Retry-After past the limit.
- `CookieGuard` makes Airflow's `_token` cookie HttpOnly, SameSite=Lax (and Secure over https):
  it rewrites every Set-Cookie of `_token` that passes through, and re-issues once, as HttpOnly,
  the cookie that the Simple auth manager's login page sets from JavaScript.

Airflow adds plugin middlewares (`fastapi_root_middlewares`) inside its own (GZip, JWT refresh,
access log), all of which leave the body alone, and outside every route and mounted app.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from html import escape
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

MIB = 1024 * 1024
TOKEN_COOKIE = "_token"  # noqa: S105 - a cookie name (Airflow's COOKIE_NAME_JWT_TOKEN), not a secret
MARK_COOKIE = "_demat_jeton"  # fingerprint of the `_token` value already re-issued as HttpOnly

# route (method, regex on the path below the API server's root) -> (cap setting, default cap, needs a valid JWT)
_UPLOAD = 512 * MIB + MIB  # flows.pipeline.actions.MAX_RESUBMIT_BYTES plus the multipart envelope
_ANSWER = 150 * MIB + MIB  # flows.pipeline.answers.MAX_ANSWER_BYTES plus the envelope
UPLOAD_ROUTES: list[tuple[str, re.Pattern[str], str, int]] = [
    ("POST", re.compile(r"^/demat/api/v1/documents/?$"), "DEMAT_UPLOAD_MAX_BYTES", _UPLOAD),
    ("POST", re.compile(r"^/demat/api/v1/dossiers/[^/]+/resubmit/?$"), "DEMAT_UPLOAD_MAX_BYTES", _UPLOAD),
    ("POST", re.compile(r"^/demat/dossiers/[^/]+/resoumettre/?$"), "DEMAT_UPLOAD_MAX_BYTES", _UPLOAD),
    ("POST", re.compile(r"^/demat/api/v1/dossiers/[^/]+/reponse/?$"), "DEMAT_ANSWER_MAX_BYTES", _ANSWER),
    ("POST", re.compile(r"^/demat/dossiers/[^/]+/repondre/?$"), "DEMAT_ANSWER_MAX_BYTES", _ANSWER),
]
DEFAULT_MAX = MIB  # any other body: JSON, forms, Airflow's API and UI
EXECUTION_MAX = 32 * MIB  # the Execution API (task processes: XComs, rendered fields), a task JWT


def env_int(name: str, default: int) -> int:
    """A positive integer (bytes, counts, seconds) from the environment; a bad value keeps the default."""
    raw = os.environ.get(name, "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    if raw:
        log.warning("%s=%r illisible (entier positif attendu) : valeur par défaut %d", name, raw, default)
    return default


def _path(scope: Scope) -> str:
    path = scope.get("path") or "/"
    root = (scope.get("root_path") or "").rstrip("/")
    if root and path.startswith(root + "/"):
        return path[len(root):]
    return path


def _mib(n: int) -> str:
    return f"{n / MIB:.0f} Mio" if n >= MIB else f"{max(1, n // 1024)} Kio"


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers") or []}


def _cookies(scope: Scope) -> dict[str, str]:
    raw = _headers(scope).get(b"cookie", b"").decode("latin-1")
    jar = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # noqa: BLE001 - a malformed Cookie header: no cookie for us
        return {}
    return {k: m.value for k, m in jar.items()}


def _token_of(scope: Scope) -> str:
    auth = _headers(scope).get(b"authorization", b"").decode("latin-1")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return _cookies(scope).get(TOKEN_COOKIE, "")


async def airflow_user_ok(scope: Scope) -> bool:
    """The caller's JWT (Bearer header, else the `_token` cookie) is valid for Airflow's auth manager."""
    token = _token_of(scope)
    if not token or len(token) > 16384:
        return False
    try:
        from airflow.api_fastapi.core_api.security import resolve_user_from_token

        await resolve_user_from_token(token)
        return True
    except Exception:  # noqa: BLE001 - expired, invalid, or an auth manager error: not authenticated
        return False


def error_response(scope: Scope, status: int, erreur: str, correction: str,
                   headers: dict[str, str] | None = None):
    """French error in the shape of the route: demat's API (JSON erreur/correction), demat's pages (HTML),
    Airflow's API and UI (JSON with `detail`, which Airflow's UI shows)."""
    from starlette.responses import HTMLResponse, JSONResponse

    path = _path(scope)
    hdrs = {"Connection": "close", **(headers or {})} if status in (401, 413) else dict(headers or {})
    if path.startswith("/demat/api/"):
        return JSONResponse({"erreur": erreur, "correction": correction}, status_code=status, headers=hdrs)
    if path.startswith("/demat"):
        return HTMLResponse(error_page(status, erreur, correction), status_code=status, headers=hdrs)
    return JSONResponse({"detail": f"{erreur} {correction}", "erreur": erreur, "correction": correction},
                        status_code=status, headers=hdrs)


TITLES = {400: "Requête invalide", 401: "Connexion requise", 403: "Accès refusé", 404: "Page introuvable",
          405: "Méthode non autorisée", 413: "Envoi trop volumineux", 422: "Requête invalide",
          429: "Trop de tentatives"}


def error_page(status: int, erreur: str, correction: str, *, prefix: str = "/demat") -> str:
    """A self-contained French error page (no session needed: also shown to anonymous callers)."""
    title = TITLES.get(status, "Erreur")
    return (f'<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>{escape(title)} — demat</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="{prefix}/static/demat.css"></head><body><main class="container">'
            f'<h1>{escape(title)}</h1><p class="erreur">{escape(erreur)}</p><p>{escape(correction)}</p>'
            f'<p><a href="{prefix}/dossiers">Retour aux dossiers</a> · <a href="{prefix}/parapheur">Parapheur</a>'
            '</p></main></body></html>')


# ----------------------------------------------------------------------------------------------- path guard
# a decoded newline (or another line or control character) in a /demat path matches no route: the
# "/demat/{path}" mount's pattern stops at a newline, so Airflow's router answered its English 404
_CONTROL_IN_PATH = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


class PathGuard:
    """A demat address holding control characters gets a French 400 in the route's shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _path(scope).startswith("/demat") and _CONTROL_IN_PATH.search(_path(scope)):
            await error_response(scope, 400, "L'adresse demandée contient un caractère de contrôle (retour à la ligne, "
                                 "tabulation…) : elle ne désigne aucune page ni aucun dossier.",
                                 "Vérifiez l'identifiant placé dans l'adresse : lettres minuscules, chiffres et "
                                 "tirets seulement (ex. saint-sever).")(scope, receive, send)
            return
        await self.app(scope, receive, send)


# ----------------------------------------------------------------------------------------------- body limit
class BodyLimit:
    """Cap every request body while it streams; refuse anonymous uploads before reading them."""

    def __init__(self, app: ASGIApp, *, default_max: int | None = None, execution_max: int | None = None,
                 upload_caps: dict[str, int] | None = None,
                 authenticate: Callable[[Scope], Awaitable[bool]] = airflow_user_ok) -> None:
        self.app = app
        self.default_max = default_max or env_int("DEMAT_BODY_MAX_BYTES", DEFAULT_MAX)
        self.execution_max = execution_max or env_int("DEMAT_EXECUTION_BODY_MAX_BYTES", EXECUTION_MAX)
        caps = upload_caps or {}
        self.uploads = [(m, rx, caps.get(name) or env_int(name, default)) for m, rx, name, default in UPLOAD_ROUTES]
        self.authenticate = authenticate

    def limit_for(self, method: str, path: str) -> tuple[int, bool]:
        """(cap in bytes, whether the caller must hold a valid JWT before the body is read)."""
        for m, rx, cap in self.uploads:
            if method == m and rx.match(path):
                return cap, True
        if path == "/execution" or path.startswith("/execution/"):
            return self.execution_max, False
        return self.default_max, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, needs_auth = self.limit_for(scope.get("method", "GET"), _path(scope))
        length = _headers(scope).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        if needs_auth and not await self.authenticate(scope):
            await error_response(scope, 401, "Connexion requise avant l'envoi d'un fichier : aucun jeton valide "
                                 "(session expirée, jeton absent ou invalide). Rien n'a été lu ni enregistré.",
                                 "Reconnectez-vous (ou obtenez un jeton par POST /auth/token et envoyez "
                                 "« Authorization: Bearer <jeton> »), puis envoyez le fichier à nouveau.")(
                scope, receive, send)
            return
        state = {"received": 0, "started": False, "refused": False}

        async def guarded_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await self._too_large(scope, receive, send, limit)
                    return {"type": "http.disconnect"}  # the route stops reading; its own answer is dropped
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not state["refused"]:
                raise
            log.debug("corps refusé (%d octets reçus) : erreur de la route ignorée", state["received"], exc_info=True)

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        await error_response(scope, 413, f"Envoi trop volumineux : plus de {_mib(limit)} pour cette adresse. "
                             "L'envoi a été interrompu, rien n'a été enregistré.",
                             "Réduisez la taille du fichier (découpez un flux PES trop gros en plusieurs fichiers) "
                             "ou, pour une autre requête, envoyez un corps plus petit.")(scope, receive, send)


# ----------------------------------------------------------------------------------------------- login throttle
LOGIN_ROUTES = re.compile(r"^/auth/(token|token/cli|login)/?$")
LOGIN_BODY_MAX = 64 * 1024


class Throttle:
    """Failures per key in a sliding window; a key is blocked while it holds `limit` failures."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 20000) -> None:
        self.window, self.clock, self.max_keys = window, clock, max_keys
        self._fails: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._fails.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._fails[key]
        return q

    def retry_after(self, key: tuple[str, str], limit: int) -> int:
        """Seconds until the key may try again (0: allowed now)."""
        now = self.clock()
        q = self._recent(key, now)
        if len(q) < limit:
            return 0
        return max(1, math.ceil(q[-limit] + self.window - now))

    def fail(self, key: tuple[str, str]) -> None:
        now = self.clock()
        self._recent(key, now)
        q = self._fails.setdefault(key, deque())
        q.append(now)
        self._fails.move_to_end(key)
        while len(q) > 1000:
            q.popleft()
        while len(self._fails) > self.max_keys:  # random user names must not grow memory without bound
            self._fails.popitem(last=False)

    def clear(self, key: tuple[str, str]) -> None:
        self._fails.pop(key, None)


def _login_user(body: bytes, content_type: str) -> str:
    try:
        if "json" in content_type:
            data = json.loads(body or b"{}")
            user = data.get("username") if isinstance(data, dict) else None
        elif "x-www-form-urlencoded" in content_type:
            user = (parse_qs(body.decode("utf-8", "replace")).get("username") or [None])[0]
        else:
            user = None
    except ValueError:
        user = None
    return str(user).strip().lower()[:150] if user else ""


class LoginThrottle:
    """429 with Retry-After after `per_user` failed logins of one user name, or `per_address` from one
    client address, within `window` seconds. A success clears the user's count, not the address's."""

    def __init__(self, app: ASGIApp, *, per_user: int | None = None, per_address: int | None = None,
                 window: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.per_user = per_user or env_int("DEMAT_LOGIN_MAX_FAILURES", 5)
        self.per_address = per_address or env_int("DEMAT_LOGIN_MAX_FAILURES_PER_ADDRESS", 20)
        self.throttle = Throttle(window or env_int("DEMAT_LOGIN_WINDOW_SECONDS", 60), clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = _path(scope)
        if scope["type"] != "http" or scope.get("method") != "POST" or not LOGIN_ROUTES.match(path):
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > LOGIN_BODY_MAX:
                await error_response(scope, 413, f"Demande de connexion trop volumineuse (plus de "
                                     f"{_mib(LOGIN_BODY_MAX)}).", "Envoyez seulement le nom et le mot de passe.")(
                    scope, receive, send)
                return
        headers = _headers(scope)
        user = _login_user(body, headers.get(b"content-type", b"").decode("latin-1").lower())
        address = (scope.get("client") or ("?", 0))[0]
        keys = [(("utilisateur", user), self.per_user)] if user else []
        keys.append((("adresse", address), self.per_address))
        wait = max(self.throttle.retry_after(k, n) for k, n in keys)
        if wait:
            log.warning("connexion refusée (trop d'échecs) : utilisateur %r, adresse %s, %d s", user, address, wait)
            await error_response(scope, 429, "Trop de tentatives de connexion échouées pour ce compte ou depuis "
                                 f"cette adresse : connexion bloquée pendant {wait} s.",
                                 f"Attendez {wait} secondes puis réessayez avec le bon mot de passe ; en cas d'oubli, "
                                 "demandez à l'opérateur de le réinitialiser.",
                                 headers={"Retry-After": str(wait)})(scope, receive, send)
            return
        sent = {"done": False}

        async def replay() -> Message:
            if not sent["done"]:
                sent["done"] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        outcome = {"status": 0, "token_cookie": False}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                outcome["token_cookie"] = any(
                    k.lower() == b"set-cookie" and v.startswith(TOKEN_COOKIE.encode() + b"=") and
                    not v.startswith(TOKEN_COOKIE.encode() + b"=;") for k, v in message.get("headers", []))
            await send(message)

        await self.app(scope, replay, watch)
        status = outcome["status"]
        if path.startswith("/auth/login"):  # FAB's form: success sets the `_token` cookie, failure does not
            ok, failed = outcome["token_cookie"], not outcome["token_cookie"] and status < 500
        else:
            ok, failed = status in (200, 201), status in (400, 401, 403, 422)
        if ok and user:
            self.throttle.clear(("utilisateur", user))
        elif failed:
            for key, _ in keys:
                self.throttle.fail(key)


# ----------------------------------------------------------------------------------------------- cookie guard
def fingerprint(token: str) -> str:
    return hashlib.sha256(f"demat-cookie|{token}".encode()).hexdigest()[:32]


def harden_set_cookie(value: bytes, secure: bool) -> bytes:
    """Add HttpOnly, SameSite=Lax (replacing any other SameSite) and, over https, Secure."""
    parts = [p.strip() for p in value.decode("latin-1").split(";")]
    attrs = [p for p in parts[1:] if p and p.split("=", 1)[0].strip().lower() not in ("httponly", "samesite")]
    attrs += ["HttpOnly", "SameSite=Lax"]
    if secure and not any(a.lower() == "secure" for a in attrs):
        attrs.append("Secure")
    return "; ".join([parts[0], *attrs]).encode("latin-1")


def _cookie_path() -> str:
    try:
        from airflow.api_fastapi.app import get_cookie_path

        return get_cookie_path()
    except Exception:  # noqa: BLE001 - outside Airflow (unit tests)
        return "/"


class CookieGuard:
    """HttpOnly + SameSite=Lax (+ Secure over https) on Airflow's `_token` cookie, whoever sets it."""

    LOGIN_PAGES = ("/auth/login", "/auth/login/")

    def __init__(self, app: ASGIApp, *, cookie_path: str | None = None) -> None:
        self.app, self._path = app, cookie_path

    @property
    def cookie_path(self) -> str:
        if self._path is None:
            self._path = _cookie_path()
        return self._path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"
        cookies = _cookies(scope)
        token = cookies.get(TOKEN_COOKIE, "")
        login_page = scope.get("method") == "GET" and _path(scope) in self.LOGIN_PAGES
        reissue = bool(token) and len(token) < 8192 and cookies.get(MARK_COOKIE) != fingerprint(token)
        tail = f"; Path={self.cookie_path}; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers, seen = [], False
                for k, v in message.get("headers", []):
                    if k.lower() == b"set-cookie" and v.startswith(TOKEN_COOKIE.encode() + b"="):
                        v, seen = harden_set_cookie(v, secure), True
                    headers.append((k, v))
                if login_page and token and not seen:
                    # the login page sets the new token from JavaScript, which cannot replace an HttpOnly
                    # cookie: opening the login page ends the current session
                    headers.append((b"set-cookie", f'{TOKEN_COOKIE}=""; Max-Age=0{tail}'.encode()))
                    headers.append((b"set-cookie", f'{MARK_COOKIE}=""; Max-Age=0{tail}'.encode()))
                elif reissue and not seen and _cookie_safe(token):
                    headers.append((b"set-cookie", f"{TOKEN_COOKIE}={token}{tail}".encode("latin-1")))
                    headers.append((b"set-cookie", f"{MARK_COOKIE}={fingerprint(token)}{tail}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, guarded_send)


def _cookie_safe(value: str) -> bool:
    """A JWT (base64url and dots): nothing that could inject another attribute into Set-Cookie."""
    return bool(re.fullmatch(r"[A-Za-z0-9._~+/=-]+", value))


def root_middlewares() -> list[dict]:
    """What demat_plugin registers as `fastapi_root_middlewares` (the last one is the outermost)."""
    return [
        {"middleware": CookieGuard, "args": [], "kwargs": {}, "name": "demat_cookie_guard"},
        {"middleware": LoginThrottle, "args": [], "kwargs": {}, "name": "demat_login_throttle"},
        {"middleware": PathGuard, "args": [], "kwargs": {}, "name": "demat_path_guard"},
        {"middleware": BodyLimit, "args": [], "kwargs": {}, "name": "demat_body_limit"},
    ]
