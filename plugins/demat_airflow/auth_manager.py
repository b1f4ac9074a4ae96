"""Airflow's UI and REST API for operators only: the embedded default's auth manager (issue 14).

Agents ("viewer"), officials and VISA respondents ("user") log in through Airflow (its login page
and POST /auth/token give demat's pages and API their identity) but never reach Airflow's own DAG,
run, task, log, XCom, HITL, event-log, asset, backfill, pool, variable, connection or
configuration views and APIs: those show and change every collectivité's dossiers at once.
demat's pages and API (/demat) decide per collectivité instead, and answer Airflow's HITL with
demat's service identity (`service_user()`, op role, no password: its short-lived token is minted
inside the API server by plugins/demat_airflow/ui/hitl.py and never leaves it).

Operators ("op") and administrators ("admin") keep SimpleAuthManager's rights unchanged.

Written on Airflow's public auth-manager interface (BaseAuthManager, through SimpleAuthManager for
users, passwords and the login page). Selected by
AIRFLOW__CORE__AUTH_MANAGER=demat_airflow.auth_manager.DematAuthManager (embedded/platform.py).
The compose deployment uses FAB with demat's restricted role instead (embedded/distributed.py) and
`demat_airflow.fab_auth_manager.DematFabAuthManager` (FAB's HITL respondent check on user names).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import ResourceMethod
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        AssetAliasDetails,
        AssetDetails,
        ConfigurationDetails,
        ConnectionDetails,
        DagAccessEntity,
        DagDetails,
        PoolDetails,
        VariableDetails,
    )
    from airflow.api_fastapi.common.types import MenuItem

OPERATOR_ROLES = frozenset({"op", "admin"})
NON_OPERATOR_ROLES = frozenset({"viewer", "user"})  # agents; officials and VISA respondents
SERVICE_USER = "demat-service"

# What a non-operator may still read of Airflow's own views: the plugin list, because Airflow's UI
# builds its navigation (demat's Parapheur and Dossiers entries) from GET /api/v2/plugins. It names
# the installed plugins and their entries, nothing of any collectivité.
NON_OPERATOR_VIEWS = frozenset({AccessView.PLUGINS})
ON_BEHALF_CLAIM = "demat_pour"  # in the service identity's tokens: the official demat checked


def service_user() -> str:
    """demat's service identity: answers Airflow's HITL for the official demat checked."""
    return os.environ.get("DEMAT_SERVICE_USER", "").strip() or SERVICE_USER


def is_operator(user: BaseUser | None) -> bool:
    """An operator or administrator of the platform (simple auth manager roles "op" and "admin")."""
    role = (getattr(user, "role", None) or "").lower()
    return role in OPERATOR_ROLES


class DematServiceUser(SimpleAuthManagerUser):
    """demat's service identity (role op) acting for one official: Airflow's HITL records
    responded_by = {id: the service identity, name: the official}, which demat journals."""

    def __init__(self, *, username: str, on_behalf_of: str) -> None:
        super().__init__(username=username, role="op")
        self.on_behalf_of = on_behalf_of

    def get_name(self) -> str:
        return self.on_behalf_of


class DematAuthManager(SimpleAuthManager):
    """SimpleAuthManager where only "op" and "admin" reach Airflow's own views and APIs."""

    def service_token(self, on_behalf_of: str, *, expiration_time_in_seconds: int = 300) -> str:
        """Mint the service identity's JWT (in the API server only: it needs the JWT secret)."""
        if not on_behalf_of:
            raise ValueError("identité de service : l'utilisateur pour qui elle agit est requis")
        user = DematServiceUser(username=service_user(), on_behalf_of=on_behalf_of)
        return self.generate_jwt(user, expiration_time_in_seconds=expiration_time_in_seconds)

    def serialize_user(self, user: SimpleAuthManagerUser) -> dict[str, Any]:
        claims = super().serialize_user(user)
        if isinstance(user, DematServiceUser):
            claims[ON_BEHALF_CLAIM] = user.on_behalf_of
        return claims

    def deserialize_user(self, token: dict[str, Any]) -> SimpleAuthManagerUser:
        """The on-behalf claim counts only in the service identity's own tokens, whose role is op."""
        on_behalf_of = token.get(ON_BEHALF_CLAIM)
        if on_behalf_of and token.get("sub") == service_user() and token.get("role") == "op":
            return DematServiceUser(username=token["sub"], on_behalf_of=str(on_behalf_of))
        return super().deserialize_user(token)

    # -- Dags and everything under them: runs, task instances, logs, XComs, HITL, event log, code,
    #    warnings, versions, dependencies; backfills are checked as DagAccessEntity.RUN in 3.3
    def is_authorized_dag(self, *, method: ResourceMethod, user: SimpleAuthManagerUser,
                          access_entity: DagAccessEntity | None = None, details: DagDetails | None = None) -> bool:
        return is_operator(user) and super().is_authorized_dag(method=method, user=user, access_entity=access_entity,
                                                                details=details)

    def is_authorized_asset(self, *, method: ResourceMethod, user: SimpleAuthManagerUser,
                            details: AssetDetails | None = None) -> bool:
        return is_operator(user) and super().is_authorized_asset(method=method, user=user, details=details)

    def is_authorized_asset_alias(self, *, method: ResourceMethod, user: SimpleAuthManagerUser,
                                  details: AssetAliasDetails | None = None) -> bool:
        return is_operator(user) and super().is_authorized_asset_alias(method=method, user=user, details=details)

    def is_authorized_pool(self, *, method: ResourceMethod, user: SimpleAuthManagerUser,
                           details: PoolDetails | None = None) -> bool:
        return is_operator(user) and super().is_authorized_pool(method=method, user=user, details=details)

    def is_authorized_connection(self, *, method: ResourceMethod, user: SimpleAuthManagerUser,
                                 details: ConnectionDetails | None = None) -> bool:
        return is_operator(user) and super().is_authorized_connection(method=method, user=user, details=details)

    def is_authorized_variable(self, *, method: ResourceMethod, user: SimpleAuthManagerUser,
                               details: VariableDetails | None = None) -> bool:
        return is_operator(user) and super().is_authorized_variable(method=method, user=user, details=details)

    def is_authorized_configuration(self, *, method: ResourceMethod, user: SimpleAuthManagerUser,
                                    details: ConfigurationDetails | None = None) -> bool:
        return is_operator(user) and super().is_authorized_configuration(method=method, user=user, details=details)

    def is_authorized_view(self, *, access_view: AccessView, user: SimpleAuthManagerUser) -> bool:
        """Jobs (host names), import errors (file paths, tracebacks), providers, triggers: operators."""
        if is_operator(user):
            return super().is_authorized_view(access_view=access_view, user=user)
        return access_view in NON_OPERATOR_VIEWS and (user.role or "").lower() in NON_OPERATOR_ROLES

    def is_authorized_custom_view(self, *, method: ResourceMethod, resource_name: str,
                                  user: SimpleAuthManagerUser) -> bool:
        return is_operator(user) and super().is_authorized_custom_view(method=method, resource_name=resource_name,
                                                                        user=user)

    # an empty bulk request is "all authorized" by default: refuse it too, nothing for non-operators
    def batch_is_authorized_dag(self, requests, *, user: SimpleAuthManagerUser) -> bool:
        return is_operator(user) and super().batch_is_authorized_dag(requests, user=user)

    def batch_is_authorized_connection(self, requests, *, user: SimpleAuthManagerUser) -> bool:
        return is_operator(user) and super().batch_is_authorized_connection(requests, user=user)

    def batch_is_authorized_pool(self, requests, *, user: SimpleAuthManagerUser) -> bool:
        return is_operator(user) and super().batch_is_authorized_pool(requests, user=user)

    def batch_is_authorized_variable(self, requests, *, user: SimpleAuthManagerUser) -> bool:
        return is_operator(user) and super().batch_is_authorized_variable(requests, user=user)

    def filter_authorized_menu_items(self, menu_items: list[MenuItem], *, user: SimpleAuthManagerUser
                                     ) -> list[MenuItem]:
        """No Dags, Assets, Browse (Required Actions, Audit Log, XComs, Jobs...) nor Admin entries for
        non-operators; demat's own entries come from the plugin list and stay."""
        return list(menu_items) if is_operator(user) else []

    def is_authorized_hitl_task(self, *, assigned_users: set[str], user: SimpleAuthManagerUser) -> bool:
        """Only operators may answer Airflow's HITL directly; officials answer through demat, which
        checks them and then answers as the service identity (one of the assigned users)."""
        return is_operator(user) and super().is_authorized_hitl_task(assigned_users=assigned_users, user=user)
