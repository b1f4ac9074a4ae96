"""Who is calling, and which collectivités they may see. Identity comes from Airflow's auth manager."""

from __future__ import annotations

import os
from dataclasses import dataclass

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

    uid = str(user.get_id())
    role = getattr(user, "role", None)
    scope = visible_collectivites(settings().config, uid, operators=operator_users(), role=role)
    return Caller(uid, user.get_name() or uid, role, token, None if scope is None else frozenset(scope))


def login_url(request: Request) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=str(request.url))
