"""The hostile corpus dropped into real inboxes, through `ingest.sweep` and `steps.validate` on a
real PostgreSQL: every file refused with a French explanation beside the original (kept
byte-identical), nothing written outside the platform's areas, no network connection, and a good
file dropped afterwards still goes through."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from flows.dossier import service
from flows.dossier.db import session_scope
from flows.dossier.journal import verify_chain
from flows.pipeline import inbox, steps
from flows.pipeline.ingest import sweep
from flows.settings import REPO, Settings
from tests.hostile.conftest import snapshot
from tests.hostile.corpus import CANARY, corpus, write

COLL = "saint-sever"


@pytest.fixture
def settings(tmp_path, demat_db) -> Settings:
    state = tmp_path / "state"
    s = Settings(
        state_dir=state, config_path=REPO / "flows" / "config" / "demo.yaml", database_url=demat_db,
        store_root=str(state / "store"), inbox_root=state / "inbox", pki_dir=state / "pki",
        reference_dir=tmp_path / "reference",
    )
    inbox.ensure_layout(s.inbox_root, [c.slug for c in s.config.collectivites])
    return s


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _age(path: Path) -> None:
    old = time.time() - 60
    os.utime(path, (old, old))


def _rejected(settings: Settings, flow: str, name: str) -> tuple[Path | None, Path | None]:
    folder = settings.inbox_root / COLL / flow / inbox.REJECTED
    originals = [p for p in folder.iterdir() if p.name.endswith("_" + name)]
    if not originals:
        return None, None
    original = originals[0]
    return original, original.with_name(original.name + ".erreur.txt")


def test_hostile_corpus_through_the_pipeline(settings, ctx, listener, tmp_path, capsys):
    from flows.actes.generate import generate_acte_zip
    from flows.helios.generate import generate_pes

    items = corpus()
    before_tmp = snapshot(tmp_path)
    before_canary = snapshot(ctx.canary.parent)
    expected: dict[str, tuple[str, str, int]] = {}  # name -> (flow, sha256 or "", inode)
    for item in items:
        path = write(item, settings.inbox_root / COLL / item.flow, ctx)
        _age(path)
        expected[item.name] = (item.flow, "" if item.big else _sha(path), path.stat().st_ino)

    started = sweep(settings, min_age=1.0)
    crashed: list[str] = []
    for s in started:
        try:
            steps.validate(settings, s.dossier_id)
        except Exception as exc:  # noqa: BLE001 - a crash leaves the dossier stuck in "recu": a bug
            crashed.append(f"{s.dossier_id}: {type(exc).__name__}: {exc}")
    assert not crashed, "validate a planté (dossier bloqué en « reçu ») :\n" + "\n".join(crashed)

    problems = []
    with session_scope(settings.database_url) as session:
        for s in started:
            d = service.get(session, s.dossier_id)
            if d.state != "refuse_validation":
                problems.append(f"{d.original_name} : état {d.state} au lieu de refuse_validation")
        assert verify_chain(session).ok
    for name, (flow, sha, ino) in expected.items():
        original, explanation = _rejected(settings, flow, name)
        if original is None:
            problems.append(f"{name} : pas d'original dans rejetes/")
            continue
        if sha:
            if _sha(original) != sha:
                problems.append(f"{name} : original modifié dans rejetes/")
        elif original.stat().st_ino != ino:  # giant sparse files: the very same inode, moved, never copied
            problems.append(f"{name} : original géant recopié au lieu d'être déplacé")
        if explanation is None or not explanation.exists():
            problems.append(f"{name} : pas d'explication .erreur.txt")
            continue
        text = explanation.read_text(encoding="utf-8")
        if "refusé" not in text or CANARY in text:
            problems.append(f"{name} : explication inattendue : {text[:200]!r}")
        if "Traceback" in text:
            problems.append(f"{name} : trace Python dans l'explication")
    assert not problems, "\n".join(problems)

    # nothing written outside the platform's state, nothing touched in the canary folder
    after = snapshot(tmp_path)
    state = str(settings.state_dir)
    outside = [p for p, v in after.items() if not p.startswith(state) and before_tmp.get(p) != v]
    assert outside == []
    assert snapshot(ctx.canary.parent) == before_canary
    for evil in ("/tmp/evil.txt", "/tmp/evil.xml", "/etc/cron.d/evil"):
        assert not Path(evil).exists()
    assert listener.connections == []
    # the canary secret never reached the store, the work area or the journal
    for p in settings.state_dir.rglob("*"):
        if p.is_file() and p.stat().st_size < 8 * 1024 * 1024 and p.name != "secret.txt":
            assert CANARY.encode() not in p.read_bytes(), f"secret canari trouvé dans {p}"

    # the next good files still go through
    coll = settings.config.collectivite(COLL)
    good_pes = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                            codbud=coll.helios.codbud, nomfic="PESAPRES01", seed=11)
    good_acte = generate_acte_zip(collectivite=coll, numero="APRES2026_01")
    for flow, name, data in (("helios", "PES-apres.xml", good_pes), ("actes", "acte-apres.zip", good_acte)):
        p = settings.inbox_root / COLL / flow / name
        p.write_bytes(data)
        _age(p)
    good = sweep(settings, min_age=1.0)
    assert len(good) == 2
    outcomes = {s.flow: steps.validate(settings, s.dossier_id) for s in good}
    assert {f: o.state for f, o in outcomes.items()} == {"helios": "valide", "actes": "valide"}, outcomes
    with capsys.disabled():
        print(f"\n[hostile] pipeline : {len(items)} fichiers hostiles déposés, {len(started)} dossiers refusés à la "
              f"validation, {len(items) - len(started)} refusés dès la réception ; 2 fichiers sains validés ensuite")
