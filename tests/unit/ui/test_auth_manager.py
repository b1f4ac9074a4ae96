"""DematAuthManager's decisions: non-operators reach none of Airflow's own data, operators keep all.

Every is_authorized_* of Airflow's auth-manager interface, for every method and every Dag access
entity, for the four demo roles; the menu; the HITL respondent check; and the authorized Dag ids
Airflow's list routes filter on. The end-to-end sweep of every /api/v2 route is
tests/e2e/test_airflow_isolation.py.
"""

from __future__ import annotations

import pytest

pytest.importorskip("airflow")

from airflow.api_fastapi.auth.managers.models.resource_details import (  # noqa: E402
    AccessView,
    AssetAliasDetails,
    AssetDetails,
    ConfigurationDetails,
    ConnectionDetails,
    DagAccessEntity,
    DagDetails,
    PoolDetails,
    VariableDetails,
)
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser  # noqa: E402
from airflow.api_fastapi.common.types import MenuItem  # noqa: E402

from demat_airflow.auth_manager import DematAuthManager, is_operator, service_user  # noqa: E402

METHODS = ("GET", "POST", "PUT", "DELETE")
ENTITIES = (None, *DagAccessEntity)
NON_OPERATORS = ("viewer", "user", "", "VIEWER", "User")


def user(role: str | None, name: str = "quelqu.un") -> SimpleAuthManagerUser:
    return SimpleAuthManagerUser(username=name, role=role)


@pytest.fixture
def am() -> DematAuthManager:
    return DematAuthManager()


def _checks(am: DematAuthManager, u, method: str):
    """Every resource check of the interface, as (label, decision)."""
    yield "configuration", am.is_authorized_configuration(method=method, user=u, details=ConfigurationDetails("core"))
    yield "connection", am.is_authorized_connection(method=method, user=u, details=ConnectionDetails("demat_dgfip"))
    yield "asset", am.is_authorized_asset(method=method, user=u, details=AssetDetails("1"))
    yield "asset_alias", am.is_authorized_asset_alias(method=method, user=u, details=AssetAliasDetails("1"))
    yield "pool", am.is_authorized_pool(method=method, user=u, details=PoolDetails("default_pool"))
    yield "variable", am.is_authorized_variable(method=method, user=u, details=VariableDetails("x"))
    yield "custom_view", am.is_authorized_custom_view(method=method, resource_name="Dossiers", user=u)
    for entity in ENTITIES:
        for details in (None, DagDetails(id="demat_pes"), DagDetails(id="demat_ingest")):
            yield (f"dag {entity} {details}",
                   am.is_authorized_dag(method=method, user=u, access_entity=entity, details=details))


@pytest.mark.parametrize("role", NON_OPERATORS)
@pytest.mark.parametrize("method", METHODS)
def test_non_operators_reach_nothing_of_airflow(am, role, method):
    allowed = [label for label, ok in _checks(am, user(role), method) if ok]
    assert allowed == []


@pytest.mark.parametrize("role", NON_OPERATORS)
def test_non_operators_views_menu_and_hitl(am, role):
    u = user(role, "maire.saintsever")
    # the plugin list only: Airflow's navigation shows demat's entries from it
    assert {v for v in AccessView if am.is_authorized_view(access_view=v, user=u)} == (
        {AccessView.PLUGINS} if role else set())
    assert am.filter_authorized_menu_items(list(MenuItem), user=u) == []
    assert am.get_authorized_menu_items(user=u) == []
    # even when assigned: an official answers through demat, never through Airflow's HITL API
    assert not am.is_authorized_hitl_task(assigned_users={"maire.saintsever"}, user=u)
    assert am.filter_authorized_dag_ids(dag_ids={"demat_pes", "demat_acte", "demat_ingest"}, user=u) == set()
    assert am.filter_authorized_dag_ids(dag_ids={"demat_pes"}, user=u, method="PUT") == set()
    # an empty bulk body (nothing to check) is no way in either
    for batch in (am.batch_is_authorized_dag, am.batch_is_authorized_connection, am.batch_is_authorized_pool,
                  am.batch_is_authorized_variable):
        assert not batch([], user=u)
        assert not batch([{"method": "GET"}], user=u)


@pytest.mark.parametrize("role", ("op", "admin", "OP"))
@pytest.mark.parametrize("method", METHODS)
def test_operators_keep_everything_they_had(am, role, method):
    u = user(role, "operateur")
    denied = [label for label, ok in _checks(am, u, method) if not ok]
    # SimpleAuthManager gives "op" everything but these (admin-only) ones
    assert denied == []
    assert all(am.is_authorized_view(access_view=v, user=u) for v in AccessView)
    assert am.filter_authorized_menu_items(list(MenuItem), user=u) == list(MenuItem)
    assert am.batch_is_authorized_dag([{"method": method, "details": DagDetails(id="demat_pes")}], user=u)
    assert am.filter_authorized_dag_ids(dag_ids={"demat_pes", "demat_ingest"}, user=u, method=method) == {
        "demat_pes", "demat_ingest"}


def test_hitl_respondents(am, monkeypatch):
    monkeypatch.delenv("DEMAT_SERVICE_USER", raising=False)
    service = user("op", service_user())
    assert service_user() == "demat-service"
    assert am.is_authorized_hitl_task(assigned_users={"maire.saintsever", "demat-service"}, user=service)
    assert not am.is_authorized_hitl_task(assigned_users={"maire.saintsever"}, user=service)  # not assigned
    assert am.is_authorized_hitl_task(assigned_users={"operateur"}, user=user("op", "operateur"))
    assert not am.is_authorized_hitl_task(assigned_users={"admin"}, user=user("op", "operateur"))
    monkeypatch.setenv("DEMAT_SERVICE_USER", "  ")
    assert service_user() == "demat-service"  # blank means the default, never "anyone"
    monkeypatch.setenv("DEMAT_SERVICE_USER", "svc-demat")
    assert service_user() == "svc-demat"


def test_forged_or_odd_roles_are_not_operators():
    for role in (None, "", "viewer", "user", "operator", "op ", "administrateur", "root", "Op|admin"):
        assert not is_operator(user(role)), role
    for role in ("op", "admin", "ADMIN"):
        assert is_operator(user(role))


def test_an_unknown_role_is_refused_not_an_error(am):
    """A token with a role the simple auth manager does not know must not crash into a 500 for
    non-operator checks (refused before SimpleAuthManager parses the role)."""
    u = user("stagiaire")
    assert not am.is_authorized_dag(method="GET", user=u)
    assert not am.is_authorized_view(access_view=AccessView.JOBS, user=u)
    assert am.filter_authorized_menu_items(list(MenuItem), user=u) == []


def test_service_token_names_the_official_but_grants_only_the_service_identity(am, monkeypatch):
    import asyncio

    from airflow.configuration import conf

    monkeypatch.delenv("DEMAT_SERVICE_USER", raising=False)
    if not conf.get("api_auth", "jwt_secret", fallback=""):
        conf.set("api_auth", "jwt_secret", "secret-de-test-" + "x" * 60)
    token = am.service_token("maire.saintsever")
    claims = asyncio.run(am._get_token_validator().avalidated_claims(token))
    assert claims["sub"] == "demat-service" and claims["role"] == "op" and claims["demat_pour"] == "maire.saintsever"
    assert claims["exp"] - claims["iat"] <= 300  # short-lived
    svc = am.deserialize_user(claims)
    # Airflow's HITL records {id: get_id(), name: get_name()}: the service identity, for the official
    assert svc.get_id() == "demat-service" and svc.get_name() == "maire.saintsever"
    assert am.is_authorized_hitl_task(assigned_users={"maire.saintsever", "demat-service"}, user=svc)
    assert am.is_authorized_dag(method="PUT", user=svc)  # op rights, to answer the HITL
    # the claim is ignored in anybody else's token: it never turns a user into someone else
    forged = am.deserialize_user({"sub": "agent.chalosse", "role": "viewer", "demat_pour": "maire.saintsever"})
    assert forged.get_name() == "agent.chalosse" and not is_operator(forged)
    forged = am.deserialize_user({"sub": "demat-service", "role": "viewer", "demat_pour": "maire.saintsever"})
    assert forged.get_name() == "demat-service" and not am.is_authorized_dag(method="GET", user=forged)
    with pytest.raises(ValueError):
        am.service_token("")
