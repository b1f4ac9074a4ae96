"""No secret and no private key in any log or artefact of a running demo.

Runs on the session `platform` (the real embedded deployment). It drives its own small load
(a valid PES, a valid acte, an invalid PES) so that it is meaningful even when run alone, then
scans every log (state *.log, airflow/logs/**, simulators), every artefact in the store, the work
area and every inbox (rejetes/ included) for the demo's passwords and key material. The secret
files themselves are excluded. Named to sort late: run it after the other e2e tests when possible
(their logs are then scanned too).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

PEM_PRIVATE = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
MAX_SCAN = 64 * 1024 * 1024


def _secrets(state: Path) -> dict[str, bytes]:
    """label -> secret bytes (never printed: only labels appear in a failure)."""
    found: dict[str, bytes] = {}
    data = json.loads((state / "secrets.json").read_text())
    for user, pw in data.get("passwords", {}).items():
        found[f"mot de passe de {user} (secrets.json)"] = pw.encode()
    for key in ("jwt_secret", "api_secret", "fernet_key"):
        if data.get(key):
            found[f"{key} (secrets.json)"] = data[key].encode()
    for p in sorted((state / "pki").glob("*.pass")):
        found[f"mot de passe {p.name}"] = p.read_bytes().strip()
    su = state / "postgres" / "superuser.pass"
    if su.exists():
        found["mot de passe du superutilisateur PostgreSQL"] = su.read_bytes().strip()
    # the SSH private keys (client and gateways): their raw secret in binary, base64 and hex, and
    # the private lines of the OpenSSH body (lines 1-2 only carry the format header and public key)
    from cryptography.hazmat.primitives import serialization

    for key in [state / "simulators" / "client" / "id_ed25519", *sorted((state / "simulators").glob("*/host_key"))]:
        if not key.exists():
            continue
        rel = key.relative_to(state)
        body = [ln for ln in key.read_bytes().splitlines() if ln and not ln.startswith(b"-----")]
        for i, line in enumerate(body[2:-1], start=3):
            found[f"clé privée SSH {rel} (ligne {i})"] = line
        priv = serialization.load_ssh_private_key(key.read_bytes(), password=None)
        seed = priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                  serialization.NoEncryption())
        found[f"clé privée SSH {rel} (binaire)"] = seed
        found[f"clé privée SSH {rel} (base64)"] = base64.b64encode(seed).rstrip(b"=")
        found[f"clé privée SSH {rel} (hex)"] = seed.hex().encode()
    return {k: v for k, v in found.items() if len(v) >= 8}


def _secret_files(state: Path) -> set[Path]:
    files = {state / "secrets.json", state / "postgres" / "superuser.pass", state / "airflow" / "passwords.json"}
    files |= set((state / "pki").glob("*"))  # .pass, .p12, ca-key.pem: secret by design
    files |= set((state / "simulators").glob("**/id_ed25519")) | set((state / "simulators").glob("*/host_key"))
    files |= set((state / "airflow").glob("simple_auth_manager_passwords.json*"))
    files |= set((state / "tsa").glob("*key*")) if (state / "tsa").is_dir() else set()
    return files


def _scanned(state: Path) -> list[Path]:
    roots = [state / "store", state / "inbox", state / "work", state / "airflow" / "logs", state / "simulators"]
    out = [p for p in state.glob("*.log")]
    out += [p for p in (state / "postgres").glob("*.log")]
    for root in roots:
        if root.is_dir():
            out += [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    skip = _secret_files(state)
    return [p for p in out if p not in skip and p.suffix not in (".sqlite-wal", ".sqlite-shm")]


def _wait_final_tolerant(platform, shas: list[str], config, *, timeout: float) -> None:
    """Like the walking skeleton's wait, but an API call that times out on a loaded machine is
    retried at the next turn instead of failing the test (this test is about secrets, not speed)."""
    import time

    import requests

    from flows.dossier import service, states
    from flows.dossier.db import session_scope
    from simulators.signer import AirflowClient, answer_all

    users = sorted(config.parapheur_users())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for u in users:
            try:
                answer_all(AirflowClient(platform.base_url, u, platform.secrets["passwords"][u]))
            except requests.RequestException:
                pass
        with session_scope(platform.database_url) as session:
            found = [service.by_sha(session, sha) for sha in shas]
            if all(d is not None and states.is_final(d.state) for d in found):
                return
        time.sleep(3)
    pytest.fail(f"dossiers non finalisés après {timeout} s")


def test_zz_no_secret_in_logs_or_artefacts(platform):
    from flows.actes.generate import generate_acte_zip
    from flows.config import load_config
    from flows.helios.generate import generate_pes

    config = load_config(platform.state / "config.yaml")
    coll = config.collectivite("saint-sever")
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    shas = [
        platform.drop(coll.slug, "helios", f"pes-secret-{stamp}.xml",
                      generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                                   codbud=coll.helios.codbud, nomfic=f"PES_SEC_{stamp}"[:30])),
        platform.drop(coll.slug, "actes", f"acte-secret-{stamp}.zip",
                      generate_acte_zip(collectivite=coll, numero=f"SEC{stamp}"[:15])),
        platform.drop(coll.slug, "helios", f"pes-secret-ko-{stamp}.xml",
                      generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                                   codbud=coll.helios.codbud, nomfic=f"PES_SECKO_{stamp}"[:30], defects=("bad_iban",))),
    ]
    _wait_final_tolerant(platform, shas, config, timeout=900)

    secrets = _secrets(platform.state)
    assert len(secrets) >= 5, f"secrets de la démo introuvables : {sorted(secrets)}"
    files = _scanned(platform.state)
    logs = [p for p in files if p.suffix == ".log" or "logs" in p.parts]
    assert logs, "aucun journal trouvé : le test ne verrait rien"
    assert any("store" in p.parts for p in files)
    leaks: list[str] = []
    for path in files:
        size = path.stat().st_size
        with path.open("rb") as fh:
            data = fh.read(MAX_SCAN)
        rel = path.relative_to(platform.state)
        if PEM_PRIVATE.search(data):
            leaks.append(f"{rel} : bloc PEM de clé privée")
        for label, secret in secrets.items():
            if secret in data:
                leaks.append(f"{rel} : {label}")
        if size > MAX_SCAN:
            leaks.append(f"{rel} : fichier de {size} octets, analysé seulement sur {MAX_SCAN} octets")
    print(f"\n[secrets] {len(files)} fichiers analysés ({len(logs)} journaux), {len(secrets)} secrets recherchés")
    assert leaks == [], "secrets trouvés :\n" + "\n".join(leaks)
