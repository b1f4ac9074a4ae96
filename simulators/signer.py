"""A simulated elected official: answers parapheur steps through demat's Parapheur page, as in a browser.

It logs in with the official's own account (Airflow's POST /auth/token), reads the requests
demat shows that account on /demat/parapheur and approves (or rejects with a reason) each one with
the page's form. Officials may not call Airflow's HITL API themselves (issue 14): demat checks them
and answers Airflow with its service identity. Operators still read Airflow's API (`get`).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import requests

# when each parked request (dag, run, task) was first seen, shared by every client of this
# process: callers often build a new client per poll
_FIRST_SEEN: dict[str, float] = {}
_LAST_KEYS: dict[str, set[str]] = {}  # user -> the keys its last poll saw

APPROVE = "Approuver"
REJECT = "Rejeter"


@dataclass
class AirflowClient:
    base_url: str
    username: str
    password: str
    timeout: float = 20
    _token: str | None = None

    def token(self) -> str:
        if self._token is None:
            r = requests.post(f"{self.base_url}/auth/token", json={"username": self.username, "password": self.password},
                              timeout=self.timeout)
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token()}"}

    def get(self, path: str, **params) -> dict:
        r = requests.get(f"{self.base_url}/api/v2{path}", params=params, headers=self._headers(), timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    def patch(self, path: str, payload: dict) -> requests.Response:
        return requests.patch(f"{self.base_url}/api/v2{path}", json=payload, headers=self._headers(),
                              timeout=self.timeout)

    def _page(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, f"{self.base_url}/demat{path}", headers=self._headers(), timeout=self.timeout,
                                allow_redirects=False, **kw)

    def pending_requests(self, *, settled_seconds: float = 5.0) -> list[dict]:
        """Requests waiting for this user's decision on demat's Parapheur page, parked for a few seconds.

        Each is {"key": demat's selection key, "task_instance": {dag_id, dag_run_id, task_id,
        map_index, state}}. demat greys out (and this client skips) a request parked less than 5 s
        ago: answering within a second of the task being parked races the scheduler (Airflow 3.3 then
        marks the resumed task failed). On top of that, the wait counts from when this client first
        saw each request (a retried try keeps the request's creation time).
        """
        r = self._page("GET", "/parapheur")
        r.raise_for_status()
        if r.status_code != 200:  # a redirect to the login page: the token was refused
            raise requests.HTTPError(f"page Parapheur : {r.status_code} {r.headers.get('location', '')}", response=r)
        found = re.search(r'name="csrf" value="([^"]*)"', r.text)
        self._csrf = html.unescape(found.group(1)) if found else ""
        out = []
        now = time.monotonic()
        rows = [(html.unescape(m.group(1)), m.group(2))
                for m in re.finditer(r'<input type="checkbox" name="selection" value="([^"]+)"([^>]*)>', r.text)]
        # a request that left the page (answered, or its try failed) and comes back (a retry) is new
        for gone in _LAST_KEYS.get(self.username, set()) - {k for k, _ in rows}:
            _FIRST_SEEN.pop(gone, None)
        _LAST_KEYS[self.username] = {k for k, _ in rows}
        for key, attrs in rows:
            if "disabled" in attrs:
                continue
            dag_id, run_id, task_id, map_index = key.split("|")
            first = _FIRST_SEEN.setdefault(key, now)
            if now - first < settled_seconds:
                continue
            out.append({"key": key, "task_instance": {"dag_id": dag_id, "dag_run_id": run_id, "task_id": task_id,
                                                      "map_index": int(map_index), "state": "awaiting_input"}})
        return out

    def respond(self, detail: dict, option: str, motif: str = "") -> Decision:
        """Post the page's form for this one request; status 200 (recorded), 409 (no longer waiting
        for this user: answered elsewhere, or never theirs), 425 (still being parked) or 400."""
        if not getattr(self, "_csrf", ""):
            self.pending_requests(settled_seconds=0)
        action = "approuver" if option == APPROVE else "rejeter"
        r = self._page("POST", "/parapheur/decision",
                       data={"csrf": self._csrf, "action": action, "selection": [detail["key"]], "motif": motif})
        if r.status_code != 303:
            return Decision(r.status_code, r.text[:500])
        query = parse_qs(urlsplit(r.headers.get("location", "")).query)
        message, erreur = (query.get("message") or [""])[0], (query.get("erreur") or [""])[0]
        if message.startswith("1 ") and not erreur:
            return Decision(200, message)
        if "en cours de mise en attente" in erreur:
            return Decision(425, erreur)
        if "plus en attente" in erreur or "déjà traité" in erreur:
            return Decision(409, erreur)
        return Decision(400, erreur or message)


@dataclass
class Decision:
    """What demat's page answered to one decision (the shape of an HTTP response for callers)."""

    status_code: int
    text: str

    def raise_for_status(self) -> None:
        if self.status_code >= 400 and self.status_code != 409:
            raise requests.HTTPError(f"décision refusée par demat ({self.status_code}) : {self.text}")


def answer_all(client: AirflowClient, decide: Callable[[dict], tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """Answer every pending request of this official. Returns (run id, option) pairs."""
    decide = decide or (lambda detail: (APPROVE, ""))
    done = []
    for detail in client.pending_requests():
        option, motif = decide(detail)
        r = client.respond(detail, option, motif)
        if r.status_code in (200, 409):  # 409: already answered (by a concurrent signer or a retry)
            done.append((detail["task_instance"]["dag_run_id"], option))
        elif r.status_code == 425:  # parked a moment ago: the next round answers it
            continue
        else:
            r.raise_for_status()
    return done + sign_on_token(client)  # SIGNATURE steps on the official's token: demat-signer


SIGNED_ON_TOKEN = "Signé sur le support"  # noqa: S105 - an outcome label, not a secret


def sign_on_token(client: AirflowClient, softhsm_dir: str | None = None) -> list[tuple[str, str]]:
    """The official signs what waits for them on their own token, with `demat-signer`, as on a workstation.

    The embedded platform's SoftHSM2 tokens (`<state>/softhsm`, from `softhsm_dir` or $DEMAT_STATE):
    `tokens.json` names this account's token; its PIN file is read here and typed to the agent on
    its standard input, never put on a command line. Returns (run id, SIGNED_ON_TOKEN) pairs.
    """
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    state = os.environ.get("DEMAT_STATE")
    directory = Path(softhsm_dir) if softhsm_dir else (Path(state) / "softhsm" if state else None)
    if directory is None or not (directory / "tokens.json").exists():
        return []
    tokens = json.loads((directory / "tokens.json").read_text())
    mine = tokens.get("users", {}).get(client.username)
    if not mine:
        return []
    r = requests.get(f"{client.base_url}/demat/api/v1/signatures/pending", headers=client._headers(),
                     timeout=client.timeout)
    r.raise_for_status()
    if not r.json().get("items"):
        return []
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, DEMAT_API_TOKEN=client.token(), SOFTHSM2_CONF=tokens["conf"], PYTHONPATH=str(repo))
    pin = Path(mine["pin_file"]).read_text().strip()
    res = subprocess.run([sys.executable, "-m", "signer_agent", "sign", "--url", client.base_url,
                          "--token-label", mine["label"], "--pin-stdin"], input=pin + "\n", capture_output=True,
                         text=True, env=env, cwd=repo, timeout=600, check=False)
    del pin
    if res.returncode not in (0, 1):  # 1: some refused or still waiting (reported), the rest signed
        raise RuntimeError(f"demat-signer a échoué pour {client.username} (code {res.returncode}) : {res.stderr[-800:]}")
    return [(f"dossier__{line.split(': ', 1)[1].strip()}", SIGNED_ON_TOKEN)
            for line in res.stdout.splitlines() if line.startswith("Signé : ")]
