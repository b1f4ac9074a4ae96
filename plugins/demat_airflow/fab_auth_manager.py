"""The compose deployment's auth manager: Airflow's FAB auth manager, with one change.

demat assigns each parapheur step (an Airflow HITL task) to Airflow user names: the
configuration's officials, the operators and demat's service identity (which answers for the
official demat checked, plugins/demat_airflow/ui/hitl.py). FAB's default respondent check compares
the user's *id*, a database number there, so nobody would match: this one also accepts the user
name. Which roles see what is FAB's role model (demat's restricted role: embedded/distributed.py).

A module of its own so that the embedded default (demat_airflow.auth_manager) never imports FAB.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager

from demat_airflow.auth_manager import ON_BEHALF_CLAIM, service_user


class _OnBehalf:
    """The service identity's FAB user (its roles and permissions), named after the official it
    acts for: Airflow's HITL records responded_by = {id: its FAB id, name: the official}."""

    def __init__(self, user, on_behalf_of: str) -> None:
        self._user, self.on_behalf_of = user, on_behalf_of

    def __getattr__(self, name: str):
        return getattr(self._user, name)

    def get_name(self) -> str:
        return self.on_behalf_of


class DematFabAuthManager(FabAuthManager):
    def is_authorized_hitl_task(self, *, assigned_users: set[str], user) -> bool:
        """Assigned by id or by user name, and allowed to answer HITL requests at all (officials are
        not: their role has no Dag permission; they answer through demat)."""
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

        names = {str(user.get_id()), getattr(getattr(user, "_user", user), "username", None) or ""}
        return bool(names & set(assigned_users)) and self.is_authorized_dag(
            method="PUT", access_entity=DagAccessEntity.HITL_DETAIL, user=user)

    def service_token(self, on_behalf_of: str, *, expiration_time_in_seconds: int = 300) -> str:
        """The service identity is a FAB user with the Op role (embedded/distributed.py creates it)."""
        from airflow.providers.fab.auth_manager.models import User
        from airflow.utils.session import create_session
        from sqlalchemy import select

        if not on_behalf_of:
            raise ValueError("identité de service : l'utilisateur pour qui elle agit est requis")
        with create_session() as session:
            user = session.scalars(select(User).where(User.username == service_user())).one_or_none()
            if user is None or not user.is_active:
                raise ValueError(f"identité de service {service_user()!r} absente ou inactive dans FAB")
            claims = {**self.serialize_user(user), ON_BEHALF_CLAIM: on_behalf_of}
        return self._get_token_signer(expiration_time_in_seconds=expiration_time_in_seconds).generate(claims)

    def deserialize_user(self, token: dict[str, Any]):
        user = super().deserialize_user(token)
        on_behalf_of = token.get(ON_BEHALF_CLAIM)
        if on_behalf_of and getattr(user, "username", None) == service_user():
            return _OnBehalf(user, str(on_behalf_of))
        return user
