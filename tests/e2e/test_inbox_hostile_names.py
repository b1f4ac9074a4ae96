"""Issue 14: no file name stops intake. On the running platform, a Latin-1 byte name and a 255-byte
name are set aside with a French explanation, while a good file dropped after them, and a document
sent through the API under a 200-character name, become dossiers."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime

import pytest
import requests

from flows.dossier import service
from flows.dossier.db import session_scope

pytestmark = pytest.mark.e2e


def _dossier_for(platform, sha: str):
    with session_scope(platform.database_url) as s:
        d = service.by_sha(s, sha)
        return (d.id, d.original_name) if d is not None else None


def test_hostile_names_are_set_aside_and_do_not_stop_the_others(platform):
    from flows.config import load_config
    from flows.helios.generate import generate_pes

    coll = load_config(platform.state / "config.yaml").collectivite("saint-sever")
    ident = dict(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol, codbud=coll.helios.codbud)
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    folder = platform.state / "inbox" / coll.slug / "helios"
    bad = {b"Facture \xe9cole-" + stamp.encode() + b".xml": b"<latin1/>" + stamp.encode(),
           (b"L" * 251)[: 251 - len(stamp)] + stamp.encode() + b".xml": b"<long/>" + stamp.encode()}
    for raw, data in bad.items():  # written in place, as a Windows SFTP client would
        with open(os.path.join(os.fsencode(folder), raw), "wb") as fh:
            fh.write(data)
    good = generate_pes(**ident, nomfic=f"PES_NOMS_{stamp}", seed=41)
    sha = platform.drop(coll.slug, "helios", f"PES_apres_{stamp}.xml", good)

    token = requests.post(f"{platform.base_url}/auth/token", timeout=20, json={
        "username": "agent.saintsever", "password": platform.secrets["passwords"]["agent.saintsever"]}).json()
    long_name = ("Bordereau mandat " * 20)[: 196 - len(stamp)] + stamp + ".xml"  # 200 characters
    api_pes = generate_pes(**ident, nomfic=f"PES_API_{stamp}", seed=42)
    r = requests.post(f"{platform.base_url}/demat/api/v1/documents", timeout=60,
                      headers={"Authorization": f"Bearer {token['access_token']}"},
                      data={"collectivite": coll.slug, "flux": "helios"},
                      files={"fichier": (long_name, api_pes, "application/xml")})
    assert r.status_code == 202, r.text

    deadline = time.monotonic() + 180
    found = None
    while time.monotonic() < deadline:
        found = (_dossier_for(platform, sha), _dossier_for(platform, hashlib.sha256(api_pes).hexdigest()))
        if all(found):
            break
        time.sleep(1)
    assert found and found[0], "le bon fichier déposé après les noms hostiles n'est jamais devenu un dossier"
    assert found[1] and found[1][0] == r.json()["dossier_id"], "202 de l'API pour un dossier jamais apparu"

    rejected = folder / "rejetes"
    texts = {}
    for raw, data in bad.items():
        assert not os.path.lexists(os.path.join(os.fsencode(folder), raw)), f"{raw!r} est resté dans l'entrée"
        [kept] = [p for p in rejected.iterdir() if not p.name.endswith(".erreur.txt") and p.read_bytes() == data]
        texts[raw] = kept.with_name(kept.name + ".erreur.txt").read_text(encoding="utf-8")
        assert len(kept.name.encode()) <= 255 - len(".erreur.txt")
    latin1, long = texts.values()
    assert "saint-sever/helios/Facture école-" in latin1 and "NOM-ENCODAGE" in latin1 and "Correction" in latin1
    assert "NOM-LONGUEUR" in long and "raccourcissez" in long
    for text in texts.values():
        assert str(platform.state) not in text  # the agent's path, never the server's
