"""The API server's guards (demat_airflow.ui.limits), driven as ASGI apps with hostile requests.

Bodies are fed chunk by chunk, as uvicorn does for `Transfer-Encoding: chunked`: the tests count
how many chunks the guard pulled, so "refused before reading more" is checked, not assumed.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import FastAPI, File, Request, UploadFile
from pydantic import BaseModel

from demat_airflow.ui.limits import (
    MARK_COOKIE,
    BodyLimit,
    CookieGuard,
    LoginThrottle,
    Throttle,
    fingerprint,
    harden_set_cookie,
    root_middlewares,
)

KIB = 1024
CHUNK = 64 * KIB


class Feeder:
    """An ASGI receive() that hands out `total` bytes in chunks and counts what it gave."""

    def __init__(self, total: int, chunk: int = CHUNK, body: bytes | None = None, prefix: bytes = b"") -> None:
        self.body, self.total, self.chunk, self.given, self.calls = body, total, chunk, 0, 0
        self.prefix = prefix

    async def __call__(self):
        self.calls += 1
        if self.prefix:
            prefix, self.prefix = self.prefix, b""
            self.given += len(prefix)
            return {"type": "http.request", "body": prefix, "more_body": True}
        if self.body is not None:
            body, self.body = self.body, None
            self.given += len(body)
            return {"type": "http.request", "body": body, "more_body": False}
        if self.given >= self.total:
            await asyncio.sleep(3600)  # a client that sent everything waits for the answer
        n = min(self.chunk, self.total - self.given)
        self.given += n
        return {"type": "http.request", "body": b"x" * n, "more_body": self.given < self.total}


def run(app, method: str, path: str, feeder: Feeder, headers: dict[str, str] | None = None,
        client: str = "127.0.0.1", scheme: str = "http"):
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "scheme": scheme, "http_version": "1.1", "client": (client, 40000),
             "server": ("127.0.0.1", 8080),
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    asyncio.run(asyncio.wait_for(app(scope, feeder, send), 30))
    starts = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert len(starts) == 1, f"exactly one response expected, got {len(starts)}"
    return starts[0]["status"], {k.decode().lower(): v.decode() for k, v in starts[0]["headers"]}, body, starts[0]


class Body(BaseModel):
    a: str = ""


def target_app() -> FastAPI:
    """Routes like Airflow's and demat's: a JSON body, a multipart upload, demat's API and pages."""
    app = FastAPI()

    @app.post("/api/v2/variables")
    def json_route(body: Body) -> dict:
        return {"ok": len(body.a)}

    @app.post("/demat/api/v1/documents")
    async def upload(fichier: UploadFile = File(...)) -> dict:
        return {"taille": len(await fichier.read())}

    @app.post("/demat/dossiers/{i}/annuler")
    async def page(request: Request) -> dict:
        return {"taille": len(await request.body())}

    @app.put("/execution/task-instances/x/rtif")
    async def execution(request: Request) -> dict:
        return {"taille": len(await request.body())}

    return app


async def allow(scope) -> bool:
    return True


async def deny(scope) -> bool:
    return False


def guarded(authenticate=deny, **kw) -> BodyLimit:
    return BodyLimit(target_app(), default_max=1024 * KIB, execution_max=4 * 1024 * KIB,
                     upload_caps={"DEMAT_UPLOAD_MAX_BYTES": 2 * 1024 * KIB}, authenticate=authenticate, **kw)


# ----------------------------------------------------------------------------------------------- body limit
def test_chunked_json_past_the_cap_is_refused_while_streaming_in_french():
    feeder = Feeder(300 * 1024 * KIB)  # the 300 MiB anonymous JSON body, chunked
    status, headers, body, _ = run(guarded(), "POST", "/api/v2/variables", feeder,
                                   {"content-type": "application/json", "transfer-encoding": "chunked"})
    assert status == 413
    data = json.loads(body)
    assert "trop volumineux" in data["erreur"] and "1 Mio" in data["erreur"] and data["detail"]
    assert headers["connection"] == "close"
    # at most the cap plus one chunk was pulled from the client, never the 300 MiB
    assert feeder.given <= 1024 * KIB + CHUNK, feeder.given


def test_announced_length_past_the_cap_is_refused_without_reading():
    feeder = Feeder(10 * 1024 * KIB)
    status, _, body, _ = run(guarded(), "POST", "/api/v2/variables", feeder,
                             {"content-type": "application/json", "content-length": str(10 * 1024 * KIB)})
    assert status == 413 and feeder.calls == 0


def test_anonymous_upload_is_refused_before_a_byte_is_read():
    feeder = Feeder(1024 * 1024 * KIB)  # 1 GiB, chunked, no token
    status, headers, body, _ = run(guarded(deny), "POST", "/demat/api/v1/documents", feeder,
                                   {"content-type": "multipart/form-data; boundary=b", "transfer-encoding": "chunked"})
    assert status == 401 and feeder.calls == 0
    data = json.loads(body)
    assert "Connexion requise" in data["erreur"] and "Bearer" in data["correction"]


def test_authenticated_upload_is_capped_while_streaming():
    feeder = Feeder(1024 * 1024 * KIB, prefix=b"--b\r\nContent-Disposition: form-data; name=\"fichier\"; "
                                              b"filename=\"gros.zip\"\r\n\r\n")
    status, _, body, _ = run(guarded(allow), "POST", "/demat/api/v1/documents", feeder,
                             {"content-type": "multipart/form-data; boundary=b", "transfer-encoding": "chunked"})
    assert status == 413 and "2 Mio" in json.loads(body)["erreur"]
    assert feeder.given <= 2 * 1024 * KIB + CHUNK


def test_a_real_upload_within_the_cap_goes_through():
    part = b"%PDF" + b"y" * 5000
    body = (b"--b\r\nContent-Disposition: form-data; name=\"fichier\"; filename=\"a.zip\"\r\n"
            b"Content-Type: application/zip\r\n\r\n" + part + b"\r\n--b--\r\n")
    status, _, out, _ = run(guarded(allow), "POST", "/demat/api/v1/documents", Feeder(0, body=body),
                            {"content-type": "multipart/form-data; boundary=b", "content-length": str(len(body))})
    assert status == 200 and json.loads(out) == {"taille": len(part)}


def test_small_json_goes_through_and_pages_get_the_french_page():
    status, _, out, _ = run(guarded(), "POST", "/api/v2/variables", Feeder(0, body=b'{"a": "abc"}'),
                            {"content-type": "application/json"})
    assert status == 200 and json.loads(out) == {"ok": 3}
    status, headers, out, _ = run(guarded(), "POST", "/demat/dossiers/d1/annuler", Feeder(5 * 1024 * KIB),
                                  {"content-type": "application/x-www-form-urlencoded"})
    assert status == 413 and headers["content-type"].startswith("text/html")
    page = out.decode()
    assert '<html lang="fr">' in page and "Envoi trop volumineux" in page


def test_execution_api_has_its_own_larger_cap():
    status, _, out, _ = run(guarded(), "PUT", "/execution/task-instances/x/rtif", Feeder(3 * 1024 * KIB))
    assert status == 200 and json.loads(out) == {"taille": 3 * 1024 * KIB}
    feeder = Feeder(64 * 1024 * KIB)
    status, _, _, _ = run(guarded(), "PUT", "/execution/task-instances/x/rtif", feeder)
    assert status == 413 and feeder.given <= 4 * 1024 * KIB + CHUNK


def test_limit_table_and_registration_order():
    g = guarded()
    assert g.limit_for("POST", "/demat/api/v1/dossiers/abc/resubmit") == (2 * 1024 * KIB, True)
    assert g.limit_for("POST", "/demat/dossiers/abc/repondre")[1] is True
    assert g.limit_for("POST", "/demat/api/v1/documents/../../api/v2/x") == (1024 * KIB, False)
    assert g.limit_for("GET", "/demat/api/v1/documents") == (1024 * KIB, False)
    names = [m["name"] for m in root_middlewares()]
    assert names[-1] == "demat_body_limit"  # added last by Airflow, so outermost: before the throttle reads


def test_env_overrides_and_bad_values(monkeypatch):
    monkeypatch.setenv("DEMAT_BODY_MAX_BYTES", "2048")
    monkeypatch.setenv("DEMAT_EXECUTION_BODY_MAX_BYTES", "beaucoup")
    g = BodyLimit(target_app())
    assert g.default_max == 2048 and g.execution_max == 32 * 1024 * KIB


# ----------------------------------------------------------------------------------------------- login throttle
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def login_app():
    """Airflow's /auth/token: 201 for maire/bon, 401 otherwise; FAB's form sets `_token` on success."""
    calls = []

    async def app(scope, receive, send):
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        calls.append(body)
        if scope["path"].startswith("/auth/login"):
            ok = b"password=bon" in body
            headers = [(b"location", b"/")] + ([(b"set-cookie", b"_token=jwt; Path=/")] if ok else [])
            await send({"type": "http.response.start", "status": 302, "headers": headers})
        else:
            data = json.loads(body)
            ok = data.get("password") == "bon"
            await send({"type": "http.response.start", "status": 201 if ok else 401, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app, calls


def login(app, user, password, client="10.0.0.1", path="/auth/token"):
    body = json.dumps({"username": user, "password": password}).encode()
    return run(app, "POST", path, Feeder(0, body=body), {"content-type": "application/json"}, client=client)


def test_five_failures_lock_the_user_even_with_the_right_password():
    inner, calls = login_app()
    clock = Clock()
    app = LoginThrottle(inner, per_user=5, per_address=20, window=60, clock=clock)
    for i in range(5):
        clock.now += 1
        assert login(app, "maire.saintsever", f"faux{i}")[0] == 401
    status, headers, body, _ = login(app, "Maire.SaintSever", "bon", client="10.0.0.2")
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 60
    data = json.loads(body)
    assert "Trop de tentatives" in data["erreur"] and "secondes" in data["correction"]
    assert len(calls) == 5  # the sixth never reached Airflow's password check
    assert login(app, "agent.chalosse", "bon", client="10.0.0.2")[0] == 201  # another user is not locked
    clock.now += 61
    assert login(app, "maire.saintsever", "bon")[0] == 201


def test_per_address_limit_across_user_names_and_success_does_not_reset_it():
    inner, _ = login_app()
    clock = Clock()
    app = LoginThrottle(inner, per_user=5, per_address=6, window=60, clock=clock)
    for i in range(6):
        assert login(app, f"inconnu{i}", "x")[0] == 401
    assert login(app, "maire", "bon")[0] == 429
    assert login(app, "maire", "bon", client="10.9.9.9")[0] == 201


def test_success_clears_the_user_count():
    inner, _ = login_app()
    app = LoginThrottle(inner, per_user=3, per_address=100, window=60, clock=Clock())
    for _ in range(2):
        login(app, "maire", "faux")
    assert login(app, "maire", "bon")[0] == 201
    for _ in range(2):
        assert login(app, "maire", "faux")[0] == 401
    assert login(app, "maire", "bon")[0] == 201


def test_fab_form_failures_are_counted_too():
    inner, _ = login_app()
    app = LoginThrottle(inner, per_user=2, per_address=100, window=60, clock=Clock())

    def form(password):
        body = f"username=maire&password={password}".encode()
        return run(app, "POST", "/auth/login/", Feeder(0, body=body),
                   {"content-type": "application/x-www-form-urlencoded"})[0]

    assert form("faux") == 302 and form("faux") == 302
    assert form("bon") == 429


def test_oversized_or_hostile_login_bodies():
    inner, calls = login_app()
    app = LoginThrottle(inner, window=60, clock=Clock())
    status, _, _, _ = run(app, "POST", "/auth/token", Feeder(10 * 1024 * KIB), {"content-type": "application/json"})
    assert status == 413 and calls == []
    throttle = Throttle(60, Clock(), max_keys=100)
    for i in range(1000):  # random user names do not grow memory without bound
        throttle.fail(("utilisateur", f"u{i}"))
    assert len(throttle._fails) == 100


# ----------------------------------------------------------------------------------------------- cookies
def plain_app(set_cookie: bytes | None = None):
    async def app(scope, receive, send):
        headers = [(b"set-cookie", set_cookie)] if set_cookie else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def cookies_of(message) -> list[str]:
    return [v.decode() for k, v in message["headers"] if k == b"set-cookie"]


def test_airflow_set_cookie_gets_httponly_and_samesite():
    assert harden_set_cookie(b"_token=abc; Path=/; SameSite=None", False) == b"_token=abc; Path=/; HttpOnly; SameSite=Lax"
    assert harden_set_cookie(b"_token=abc; Path=/", True).endswith(b"SameSite=Lax; Secure")
    app = CookieGuard(plain_app(b"_token=abc; Path=/"), cookie_path="/")
    *_, start = run(app, "GET", "/", Feeder(0, body=b""))
    assert cookies_of(start) == ["_token=abc; Path=/; HttpOnly; SameSite=Lax"]


def test_script_set_token_is_reissued_once_as_httponly():
    token = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiIxIn0.c2ln"
    app = CookieGuard(plain_app(), cookie_path="/")
    *_, start = run(app, "GET", "/", Feeder(0, body=b""), {"cookie": f"_token={token}"}, scheme="https")
    got = cookies_of(start)
    assert f"_token={token}; Path=/; HttpOnly; SameSite=Lax; Secure" in got
    assert any(c.startswith(f"{MARK_COOKIE}={fingerprint(token)}") for c in got)
    *_, start = run(app, "GET", "/", Feeder(0, body=b""),
                    {"cookie": f"_token={token}; {MARK_COOKIE}={fingerprint(token)}"})
    assert cookies_of(start) == []  # already upgraded: nothing more on each response


def test_hostile_cookie_values_are_not_reflected_and_login_page_ends_the_session():
    app = CookieGuard(plain_app(), cookie_path="/")
    *_, start = run(app, "GET", "/", Feeder(0, body=b""), {"cookie": '_token="a; Domain=evil.example"'})
    assert not any("evil" in c for c in cookies_of(start))
    *_, start = run(app, "GET", "/auth/login", Feeder(0, body=b""), {"cookie": "_token=abc.def"})
    assert any(c.startswith('_token=""; Max-Age=0') and "HttpOnly" in c for c in cookies_of(start))


@pytest.mark.parametrize("path", ["/api/v2/dags", "/demat/dossiers"])
def test_no_cookie_no_change(path):
    app = CookieGuard(plain_app(), cookie_path="/")
    *_, start = run(app, "GET", path, Feeder(0, body=b""))
    assert cookies_of(start) == []


def test_upload_authentication_uses_airflows_token_check(monkeypatch):
    from airflow.api_fastapi.core_api import security as af

    from demat_airflow.ui.limits import airflow_user_ok

    seen = []

    async def resolve(token):
        seen.append(token)
        if token != "bon-jeton":
            raise ValueError("jeton invalide")
        return object()

    monkeypatch.setattr(af, "resolve_user_from_token", resolve)

    def scope(headers):
        return {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}

    ok = [asyncio.run(airflow_user_ok(scope(h))) for h in (
        {}, {"authorization": "Bearer bon-jeton"}, {"cookie": "_token=bon-jeton"}, {"authorization": "Bearer faux"},
        {"cookie": "_token=" + "a" * 20000})]
    assert ok == [False, True, True, False, False]
    assert seen == ["bon-jeton", "bon-jeton", "faux"]  # no call without a token, none for a giant one
