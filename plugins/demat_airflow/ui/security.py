"""Who is calling, and which collectivités they may see. Identity comes from Airflow's auth manager.

Forms that change something (Parapheur decisions, dossier actions) are authenticated by Airflow's
`_token` cookie, which a browser also sends with a forged cross-site request. Besides the cookie's
SameSite=Lax, each such form carries a token only our pages can compute (HMAC of the user with the
API server's secret, valid two days), and a request whose Origin (or Referer) names another host is
refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="Jeton JWT d'Airflow obtenu par POST /auth/token")


@dataclass(frozen=True)
class Caller:
    id: str
    name: str
    role: str | None
    token: str  # the caller's own Airflow JWT, forwarded when we call Airflow's REST API for them
    scope: frozenset[str] | None  # visible collectivités; None = all

    @property
    def sees_all(self) -> bool:
        return self.scope is None

    def may_see(self, collectivite: str) -> bool:
        return self.scope is None or collectivite in self.scope

    @property
    def scope_set(self) -> set[str] | None:
        return None if self.scope is None else set(self.scope)


def operator_users() -> list[str]:
    return [u for u in os.environ.get("DEMAT_OPERATORS", "admin,operateur").split(",") if u]


async def resolve_caller(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller | None:
    """Airflow's own get_user (Bearer first, then the UI's `_token` cookie); None if not authenticated."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import HTTPException

    try:
        user = await get_user(request, None, credentials)
    except HTTPException:
        return None
    if credentials and credentials.scheme.lower() == "bearer":
        token = credentials.credentials
    else:
        token = request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")
    from demat_airflow.context import settings
    from flows.dossier.queries import visible_collectivites

    uid = str(user.get_name() or user.get_id())  # the user name: FAB's get_id() is a numeric row id
    role = getattr(user, "role", None)
    scope = visible_collectivites(settings().config, uid, operators=operator_users(), role=role)
    return Caller(uid, user.get_name() or uid, role, token, None if scope is None else frozenset(scope))


def login_url(request: Request) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=str(request.url))


# --------------------------------------------------------------------------------------------- CSRF
@lru_cache(maxsize=1)
def _csrf_key() -> bytes:
    """DEMAT_CSRF_SECRET, else Airflow's [api] secret_key (shared by the API server's workers)."""
    secret = os.environ.get("DEMAT_CSRF_SECRET", "")
    if not secret:
        try:
            from airflow.configuration import conf

            secret = conf.get("api", "secret_key", fallback="") or ""
        except Exception:  # noqa: BLE001 - outside Airflow (tests): a per-process key still protects
            secret = ""
    return (secret or secrets.token_hex(32)).encode()


def _csrf_for(user_id: str, day: str) -> str:
    return hmac.new(_csrf_key(), f"demat-csrf|{user_id}|{day}".encode(), hashlib.sha256).hexdigest()


def csrf_token(caller: Caller) -> str:
    return _csrf_for(caller.id, datetime.now(UTC).strftime("%Y%m%d"))


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another host (Origin, else Referer)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return not source  # no header at all: non-browser client; "null": sandboxed or privacy-stripped
    hosts = {(request.headers.get("host") or request.url.netloc).lower()}
    hosts |= {h.strip().lower() for h in request.headers.get("x-forwarded-host", "").split(",") if h.strip()}
    return urlsplit(source).netloc.lower() in hosts


def csrf_ok(request: Request, caller: Caller, token: str) -> bool:
    if not token or not same_origin(request):
        return False
    today = datetime.now(UTC)
    return any(hmac.compare_digest(token, _csrf_for(caller.id, (today - timedelta(days=d)).strftime("%Y%m%d")))
               for d in (0, 1))
