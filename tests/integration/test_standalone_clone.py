"""A clone stands on its own (issue 15): no ../shared beside it, as on any user's machine.

The working tree (tracked and untracked files, as `git ls-files -co --exclude-standard` lists them, so
that the current changes are what is tested) is copied into an empty temporary folder: nothing sits
beside the copy. There, with DEMAT_REFERENCE_DIR unset and the copy first on the import path, the
demo's archive path runs as the platform runs it: demat builds the SEDA package of a dossier of the
demo configuration, the SAE simulator judges it with its own rules (simulators.sae.sae_rules) and
answers; demat reads the answer; the `demat` command line validates the package and the answer. An
audit hook records every file the interpreter opens: nothing may come from a `shared/reference`
folder, and the SEDA schema that judges is the one shipped in the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

DEMO_PATH = textwrap.dedent("""
    import json, random, sys, time
    opened = []
    sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and args and
                     isinstance(args[0], (str, bytes, __import__("os").PathLike)) else None)
    from datetime import date
    from pathlib import Path
    import flows
    from flows.archive.replies import parse_reply
    from flows.archive.seda import ArchiveFile, ArchiveRequest, build_package, options_from_config
    from flows.config import load_config
    from flows.helios.acquit import build_acquit
    from flows.helios.generate import generate_pes
    from simulators.counterparts import Incoming, Settings
    from simulators.sae import sae_rules

    here = Path.cwd()
    config = load_config(here / "flows" / "config" / "demo.yaml")
    coll = next(c for c in config.collectivites if c.helios is not None)
    pes = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                       codbud=coll.helios.codbud, nomfic="PESCLONE001", seed=5)
    profile = coll.archive_profile("pes_depense")
    request = ArchiveRequest(
        dossier_id="PESCLONE001", title="Flux PES du clone", flow="helios", doc_type="pes_depense",
        collectivite_name=coll.name, collectivite_siren=coll.siren, profile=profile,
        start_date=date(2026, 3, 2), end_date=date(2026, 3, 3),
        files=[ArchiveFile("PESCLONE001.xml", pes), ArchiveFile("ACQUIT.xml", build_acquit(pes, []), role="acquittement")])
    pkg = build_package(request, **options_from_config(config))
    (here / pkg.name).write_bytes(pkg.data)
    agreements = sorted({p.archival_agreement for c in config.collectivites for p in c.archive.values()})
    settings = Settings(extra={"known_agreements": agreements, "seda_version": config.seda_version})
    decision = sae_rules(Incoming(pkg.name, pkg.data, pkg.sha256, random.Random(0), settings, 1, time.time()))
    replies = {r.name: r.data for r in decision.replies}
    atr_name = next(n for n in replies if n.startswith("ATR_"))
    (here / atr_name).write_bytes(replies[atr_name])
    reply = parse_reply(replies[atr_name], our_message_identifier=pkg.message_identifier)
    from flows.archive import schemas  # libxml2 opens XSDs in C, unseen by the audit hook: ask the module
    judged_by = str(schemas.project_schema_path(config.seda_version)) if schemas.default_reference_dir() is None else None
    print(json.dumps({"flows": flows.__file__, "judged_by": judged_by, "summary": decision.outcome, "accepted": reply.accepted,
                      "code": reply.reply_code, "reason": reply.reason_fr, "package": pkg.name, "atr": atr_name,
                      "opened": sorted(set(opened))}))
""")


def _copy_worktree(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("dépôt git introuvable : la copie du clone a besoin de git ls-files")
    base = tmp_path_factory.mktemp("utilisateur")
    repo = base / "demat"
    repo.mkdir()
    _copy_worktree(repo)
    assert not (repo.parent / "shared").exists() and (repo / "schemas" / "seda" / "seda-2.2.xsd").is_file()
    return repo


def _env(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEMAT_")}
    env["PYTHONPATH"] = str(repo)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_demo_archive_path_accepted_without_shared(clone):
    p = subprocess.run([sys.executable, "-c", DEMO_PATH], cwd=clone, env=_env(clone), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert Path(out["flows"]).resolve().is_relative_to(clone.resolve()), out["flows"]  # the copy, not the checkout
    assert out["accepted"] is True and out["code"] == "000", (out["summary"], out["reason"])
    leaked = [f for f in out["opened"] if "shared/reference" in f or str(ROOT) + "/" in f and "/.venv/" not in f]
    assert leaked == [], leaked
    assert out["judged_by"] and Path(out["judged_by"]).resolve().is_relative_to(clone.resolve()), out["judged_by"]
    assert Path(out["judged_by"]).is_file()

    # the command line of the copy, on what the demo path produced
    for name in (out["package"], out["atr"]):
        cli = subprocess.run([sys.executable, "-m", "flows.cli", "validate", "--json", name], cwd=clone,
                             env=_env(clone), capture_output=True, text=True, timeout=120)
        report = json.loads(cli.stdout)
        assert cli.returncode == 0 and report["valid"] is True, cli.stdout + cli.stderr
        assert not any("SCHEMA" in f["rule"] for f in report["findings"])


def test_lost_schema_is_reported_as_an_installation_fault(clone, tmp_path):
    """The same copy with its SEDA schemas removed: the SAE answers FATAL (its own fault), never code 200."""
    broken = tmp_path / "demat"
    shutil.copytree(clone, broken)
    shutil.rmtree(broken / "schemas" / "seda")
    p = subprocess.run([sys.executable, "-c", DEMO_PATH], cwd=broken, env=_env(broken), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["accepted"] is False and out["code"] == "FATAL", out
    assert "schéma SEDA" in out["reason"] and "fichiers du paquet" not in out["reason"], out["reason"]
    cli = subprocess.run([sys.executable, "-m", "flows.cli", "validate", "--json", out["atr"]], cwd=broken,
                         env=_env(broken), capture_output=True, text=True, timeout=120)
    data = json.loads(cli.stdout)
    assert cli.returncode == 2 and data["error"]["rule"] == "SEDA-SCHEMA-INDISPONIBLE", cli.stdout
    assert "introuvable dans l'installation" in data["error"]["message"]
