"""HTTP client for the platform's signature API (`/demat/api/v1/signatures/...`, Bearer token).

Standard library only. The endpoints are described in docs/signature.md; the server side lives
in the platform's Airflow plugin. No PIN ever goes through here: only the certificate (public),
digests and raw signature values.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

API = "/demat/api/v1/signatures"
TIMEOUT = 60


class ApiError(RuntimeError):
    """The platform refused or could not be reached; French message, with the HTTP status when any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SignatureClient:
    def __init__(self, base_url: str, token: str | None = None, *, cafile: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ApiError(f"Adresse de la plateforme invalide : « {base_url} » (http(s)://hôte[:port] attendu).")
        if parsed.scheme == "http" and parsed.hostname not in ("localhost", "127.0.0.1", "::1"):
            raise ApiError("La plateforme doit être jointe en https (sauf en local) : le jeton de connexion circulerait en clair.")
        self.base = base_url.rstrip("/")
        self.token = token
        self._ctx = ssl.create_default_context(cafile=cafile) if parsed.scheme == "https" else None

    # --- transport ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None, *, raw: bool = False):
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)  # noqa: S310 - scheme checked above
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT, context=self._ctx) as resp:  # noqa: S310  # nosec B310
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                err = json.loads(exc.read() or b"{}")
                # the platform's API answers {"erreur", "correction"} in French; FastAPI's own errors {"detail"}
                detail = err.get("erreur") or err.get("detail") or err.get("message") or ""
                if err.get("correction"):
                    detail = f"{detail} {err['correction']}"
            except ValueError:
                pass
            if exc.code == 401:
                raise ApiError("Connexion refusée par la plateforme : jeton absent ou expiré. Reconnectez-vous.", 401) from None
            if exc.code == 403:
                raise ApiError(f"Action non autorisée pour ce compte{' : ' + str(detail) if detail else ''}.", 403) from None
            raise ApiError(f"La plateforme a répondu {exc.code}{' : ' + str(detail) if detail else ''}.", exc.code) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"Plateforme injoignable ({self.base}) : {reason}.") from None
        if raw:
            return payload
        try:
            return json.loads(payload or b"null")
        except ValueError:
            raise ApiError("Réponse illisible de la plateforme (JSON attendu).") from None

    def login(self, username: str, password: str) -> str:
        """Airflow's token endpoint (POST /auth/token): the official's own Airflow account."""
        out = self._request("POST", "/auth/token", {"username": username, "password": password})
        token = (out or {}).get("access_token") if isinstance(out, dict) else None
        if not token:
            raise ApiError("La plateforme n'a pas délivré de jeton de connexion.")
        self.token = token
        return token

    # --- signature API ---------------------------------------------------------------------------

    def pending(self) -> list[dict]:
        """What waits for this official's signature: GET {API}/pending."""
        out = self._request("GET", f"{API}/pending")
        items = out.get("items") if isinstance(out, dict) else None
        if not isinstance(items, list):
            raise ApiError("Réponse inattendue de la plateforme (liste « items » absente).")
        return items

    def show(self, dossier_id: str) -> dict:
        return self._request("GET", f"{API}/{_seg(dossier_id)}")

    def document(self, dossier_id: str) -> bytes:
        return self._request("GET", f"{API}/{_seg(dossier_id)}/document", raw=True)

    def prepare(self, dossier_ids: list[str], certificate_der_b64: str) -> dict:
        """POST {API}/batch: the platform checks the certificate, prepares and returns a demat-batch/1."""
        out = self._request("POST", f"{API}/batch", {"ids": list(dossier_ids), "certificate": certificate_der_b64})
        if not isinstance(out, dict) or out.get("format") != "demat-batch/1":
            raise ApiError("Réponse inattendue de la plateforme (lot demat-batch/1 attendu).")
        return out

    def post_signatures(self, batch_id: str, signatures: dict) -> dict:
        """POST {API}/batch/<batch_id>: the demat-signatures/1 answer; posting twice is harmless."""
        return self._request("POST", f"{API}/batch/{_seg(batch_id)}", signatures)

    def reject(self, dossier_id: str, motif: str) -> dict:
        motif = (motif or "").strip()
        if not motif:
            raise ApiError("Un refus doit être motivé : indiquez le motif (--motif).")
        return self._request("POST", f"{API}/{_seg(dossier_id)}/reject", {"motif": motif})


def _seg(value: str) -> str:
    value = str(value)
    if not value or value in (".", "..") or len(value) > 200:
        raise ApiError(f"Identifiant invalide : « {value} ».")
    return urllib.parse.quote(value, safe="")
