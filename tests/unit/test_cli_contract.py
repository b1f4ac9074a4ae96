"""The contract of the `demat` command line (README, issue 15), for every entry point, every kind of
file demat knows and every hostile class:

- exit 0: valid / intact; 1: invalid (a report says why); 2: unreadable or hostile (a French message
  naming the file says why). Never a Python traceback.
- `--json`: standard output is always one JSON document, on exit 0, 1 and 2 alike.

Every file is generated here (demat's own builders, then mutated); nothing is copied from elsewhere.
The commands run in-process through `flows.cli.main` (one interpreter for the whole matrix), and a few
through the real `demat` executable.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from flows.cli import main

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 3, 2)


# --- the files demat knows, generated ---------------------------------------------------------


def _pes_retour() -> bytes:
    return (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
        '<n:PES_Retour xmlns:n="http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/retour">'
        '<Enveloppe><Parametres><Version V="2"/><TypFic V="PES_Retour"/><NomFic V="RETOUR_2026_001"/></Parametres>'
        '</Enveloppe><EnTetePES><DteStr V="2026-03-02"/><IdPost V="040000"/><IdColl V="21400123400017"/>'
        '<CodCol V="123"/><CodBud V="01"/></EnTetePES>'
        '<PES_DepenseRetour><Bordereau><BlocBordereau><Exer V="2026"/><IdBord V="1"/></BlocBordereau>'
        '<Piece><InfoPiece><IdPce V="1"/><EtatPce V="4"/><Obj V="Fournitures é"/></InfoPiece></Piece>'
        "</Bordereau></PES_DepenseRetour></n:PES_Retour>\n"
    ).encode("iso-8859-1")


def _seda(version: str = "2.2"):
    from flows.archive.replies import build_acknowledgement, build_transfer_reply
    from flows.archive.seda import ArchiveFile, ArchiveRequest, build_package
    from flows.config.models import ArchiveProfile

    request = ArchiveRequest(
        dossier_id="040-214000000-20260302-CLI01-DE", title="Délibération CLI01", flow="actes",
        doc_type="deliberation", collectivite_name="Commune de Test", collectivite_siren="214000000",
        profile=ArchiveProfile(archival_agreement="ACC-ACTES-040", dua_years=10), start_date=DAY, end_date=DAY,
        files=[ArchiveFile("deliberation.pdf", b"%PDF-1.4\n% d\n%%EOF\n", role="document"),
               ArchiveFile("ARActe.xml", b"<a/>", role="acquittement")],
        transfer_date=datetime(2026, 3, 2, 12, tzinfo=UTC))
    pkg = build_package(request, version=version)
    zpkg = build_package(request, version=version, fmt="zip")
    ack = build_acknowledgement(pkg.message_identifier, version)
    atr = build_transfer_reply(pkg.message_identifier, "000", "AE_2026_1", None, version)
    return pkg, zpkg, ack, atr


def _actes():
    from flows.actes import messages as M
    from flows.actes.generate import generate_acte_zip
    from flows.actes.intake import read_submission
    from flows.actes.transmission import build_transmission
    from flows.config import load_config

    config = load_config(ROOT / "flows" / "config" / "demo.yaml")
    coll = config.collectivites[0]
    acte = generate_acte_zip(collectivite=coll, numero="CLI2026_01")
    t = build_transmission(read_submission(acte), coll, serial=1, day=DAY)
    ar = M.build_aracte(t.idacte, DAY, DAY)
    ano = M.build_anomalie_acte(t.idacte, "002", "classification pas à jour", date=DAY)
    name, answer = M.build_response_archive([ar, ano], 7, coll.siren, coll.departement, day=DAY)
    _fmt, sent = _xml_members(t.archive_bytes)
    envelope = next(d for n, d in sent.items() if n.startswith("EACT"))
    messages = {  # each @ctes message on its own, as a gateway or the préfecture writes it
        "actes_aracte.xml": ar.xml,
        "actes_anomalie.xml": ano.xml,
        "actes_acte_1-1.xml": next(d for n, d in sent.items() if n.endswith("-1-1_0.xml")),
        "actes_enveloppe_clmisill.xml": envelope,
        "actes_courrier_2-1.xml": M.build_courrier("CourrierSimple", t.idacte, date=DAY).xml,
        "actes_demande_pieces_3-1.xml": M.build_courrier("DemandePieceComplementaire", t.idacte, date=DAY).xml,
        "actes_lettre_observations_4-1.xml": M.build_courrier("LettreObservations", t.idacte, date=DAY).xml,
        "actes_ar_annulation_6-2.xml": M.build_ar_annulation(t.idacte, DAY).xml,
        "actes_anomalie_enveloppe.xml": M.build_anomalie_enveloppe(envelope, "001", "enveloppe refusée", date=DAY).xml,
        "actes_enveloppe_misillcl.xml": M.build_envelope_misillcl(coll.siren, coll.departement, 1, [ar.name]),
    }
    return coll, acte, t.archive_bytes, messages, answer


def build_files(folder: Path) -> dict[str, Path]:
    """name -> path of one valid file of every kind the CLI knows."""
    from flows.helios.acquit import build_acquit
    from flows.helios.generate import generate_pes

    coll, acte, archive, actes_messages, answer = _actes()
    pes = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                       codbud=coll.helios.codbud, nomfic="PESCLI0001", seed=3)
    pkg, zpkg, ack, atr = _seda()
    with tarfile.open(fileobj=io.BytesIO(pkg.data), mode="r:gz") as tar:
        manifest = tar.extractfile("manifest.xml").read()
    files = {
        "pes_aller.xml": pes,
        "pes_acquit.xml": build_acquit(pes, [], today=DAY),
        "pes_retour.xml": _pes_retour(),
        "acte.zip": acte,
        "actes_transmission.tar.gz": archive,
        "actes_reponse.tar.gz": answer,
        **actes_messages,
        "seda_paquet.tar.gz": pkg.data,
        "seda_paquet.zip": zpkg.data,
        "seda_manifest.xml": manifest,
        "seda_accuse.xml": ack,
        "seda_reponse.xml": atr,
    }
    out = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


# --- hostile classes, applied to each kind ------------------------------------------------------

DOCTYPE = b'<!DOCTYPE r [<!ELEMENT r ANY>]>\n'
ENTITIES = b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>\n'


def _with_prolog(xml: bytes, prolog: bytes, *, reference: bool = False) -> bytes:
    """Insert a DOCTYPE after the XML declaration (and an entity reference into the first text)."""
    head, sep, rest = xml.partition(b"?>")
    if not sep:
        head, rest = b"", xml
    else:
        head += sep + b"\n"
    out = head + prolog + rest.lstrip()
    if reference:
        end = out.index(b">", len(head) + len(prolog)) + 1
        out = out[:end] + b"&b;" + out[end:] if not out[end - 2:end] == b"/>" else out
        if b"&b;" not in out:  # first element is empty: put the reference in an attribute value
            out = out.replace(b'V="', b'V="&b;', 1)
    return out


def _xml_members(data: bytes) -> tuple[str, dict[str, bytes]]:
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return "zip", {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return "tar.gz", {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _rebuild(fmt: str, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for n, d in members.items():
                zf.writestr(n, d)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for n, d in members.items():
                ti = tarfile.TarInfo(n)
                ti.size = len(d)
                tar.addfile(ti, io.BytesIO(d))
    return buf.getvalue()


def hostile(data: bytes, cls: str) -> bytes:
    if cls == "vide":
        return b""
    if cls == "binaire":
        return bytes(range(256)) * 8
    if cls == "tronque":
        return data[: max(len(data) // 2, 1)]
    archive = data[:2] in (b"PK", b"\x1f\x8b")
    prolog, ref = (DOCTYPE, False) if cls == "doctype" else (ENTITIES, True)
    if not archive:
        return _with_prolog(data, prolog, reference=ref)
    fmt, members = _xml_members(data)  # the hostile XML travels inside the archive
    for name, content in members.items():
        if name.endswith(".xml") and content.lstrip().startswith(b"<"):
            members[name] = _with_prolog(content, prolog, reference=ref)
    return _rebuild(fmt, members)


HOSTILE = ("doctype", "entites", "tronque", "binaire", "vide")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return build_files(tmp_path_factory.mktemp("cli-fichiers"))


@pytest.fixture(scope="module")
def hostile_files(files, tmp_path_factory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("cli-hostiles")
    out = {}
    for name, path in files.items():
        for cls in HOSTILE:
            p = folder / f"{cls}-{name}"
            p.write_bytes(hostile(path.read_bytes(), cls))
            out[(name, cls)] = p
    return out


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


KIND_OF = {
    "pes_aller.xml": "pes_aller", "pes_acquit.xml": "pes_acquit", "pes_retour.xml": "pes_retour",
    "acte.zip": "acte_zip", "actes_transmission.tar.gz": "actes_archive", "actes_reponse.tar.gz": "actes_archive",
    **{n: "actes_message" for n in ("actes_aracte.xml", "actes_anomalie.xml", "actes_acte_1-1.xml",
                                    "actes_enveloppe_clmisill.xml", "actes_courrier_2-1.xml",
                                    "actes_demande_pieces_3-1.xml", "actes_lettre_observations_4-1.xml",
                                    "actes_ar_annulation_6-2.xml", "actes_anomalie_enveloppe.xml",
                                    "actes_enveloppe_misillcl.xml")},
    "seda_paquet.tar.gz": "seda_package",
    "seda_paquet.zip": "seda_package", "seda_manifest.xml": "seda_message", "seda_accuse.xml": "seda_message",
    "seda_reponse.xml": "seda_message",
}


def _no_traceback(out: str, err: str) -> None:
    assert "Traceback" not in out + err and "File \"" not in err, (out + err)[-2000:]


def _json(out: str) -> dict:
    try:
        return json.loads(out)
    except ValueError:
        pytest.fail(f"--json n'a pas produit un document JSON : {out[:500]!r}")


@pytest.mark.parametrize("name", sorted(KIND_OF))
def test_every_kind_valid_exit_0_text_and_json(files, name):
    path = files[name]
    code, out, err = run("validate", str(path))
    _no_traceback(out, err)
    assert code == 0 and "Résultat : VALIDE" in out, out + err
    code, out, err = run("validate", "--json", str(path))
    data = _json(out)
    assert code == 0 and data["exit_code"] == 0 and data["valid"] is True and data["kind"] == KIND_OF[name]
    # inspect: every kind is described (SEDA files used to raise ImportError: describe)
    code, out, err = run("inspect", str(path))
    _no_traceback(out, err)
    assert code == 0 and out.strip() and path.name in out, out + err
    code, out, err = run("inspect", "--json", str(path))
    data = _json(out)
    assert code == 0 and data["kind"] == KIND_OF[name] and data["inspection"]


@pytest.mark.parametrize("cls", HOSTILE)
@pytest.mark.parametrize("name", sorted(KIND_OF))
@pytest.mark.parametrize("command", ["validate", "inspect"])
def test_every_kind_every_hostile_class_exits_2(hostile_files, command, name, cls):
    path = hostile_files[(name, cls)]
    code, out, err = run(command, str(path))
    _no_traceback(out, err)
    assert code == 2, f"{command} {cls}-{name} : code {code}\n{out}{err}"
    text = out + err
    assert path.name in text, text  # the message names the file
    assert any(w in text for w in ("Correction", "illisible", "ILLISIBLE", "refusé", "DOCTYPE")), text
    code, out, err = run(command, "--json", str(path))
    data = _json(out)
    assert code == 2 and data["exit_code"] == 2 and data["valid"] is False if "valid" in data else code == 2
    assert data["file"] == str(path)
    message = json.dumps(data, ensure_ascii=False)
    assert "Traceback" not in message


@pytest.mark.parametrize("cls", HOSTILE)
@pytest.mark.parametrize("command", ["verify", "sign"])
def test_signature_commands_on_hostile_pes_exit_2_with_json(hostile_files, tmp_path, command, cls):
    path = hostile_files[("pes_aller.xml", cls)]
    extra = ["--out", str(tmp_path / "x.xml"), "--p12", str(tmp_path / "absent.p12"), "--password-file",
             str(tmp_path / "pw")] if command == "sign" else []
    (tmp_path / "pw").write_text("secret")
    code, out, err = run(command, *extra, "--json", str(path))
    data = _json(out)
    assert code == 2 and data["exit_code"] == 2, out + err
    assert not (tmp_path / "x.xml").exists()
    code, out, err = run(command, *extra, str(path))
    _no_traceback(out, err)
    assert code == 2 and path.name in out + err


@pytest.mark.parametrize("name", sorted(set(KIND_OF) - {"pes_aller.xml"}))
def test_sign_and_verify_refuse_other_kinds(files, tmp_path, name):
    code, out, err = run("verify", "--json", str(files[name]))
    data = _json(out)
    assert code == 2 and data["error"]["rule"] == "TYPE-INATTENDU" and "PES_Aller" in data["error"]["message"]


def _invalid_files(folder: Path, files: dict[str, Path]) -> dict[str, Path]:
    from flows.helios.generate import generate_pes

    out = {}
    pes = generate_pes(siret="21400123400017", idpost="040000", codcol="123", codbud="01", nomfic="PESCLIBAD",
                       defects=("nbrpce_mismatch", "wrong_order"))
    manifest = files["seda_manifest.xml"].read_bytes().replace(b"<LegalStatus>Public Archive</LegalStatus>",
                                                                b"<LegalStatus>Publique</LegalStatus>")
    reply = files["seda_reponse.xml"].read_bytes().replace(b"<MessageRequestIdentifier>", b"<Inconnu/><MessageRequestIdentifier>")
    fmt, members = _xml_members(files["seda_paquet.zip"].read_bytes())
    members = {n: (d + b"x" if n.startswith("Content/") and n.endswith(".pdf") else d) for n, d in members.items()}
    aracte = files["actes_aracte.xml"].read_bytes().replace(b"ClassificationDateVersionEnCours", b"ClassificationInventee")
    for name, data in {"pes_invalide.xml": pes, "seda_manifest_invalide.xml": manifest,
                       "seda_reponse_invalide.xml": reply, "seda_paquet_altere.zip": _rebuild(fmt, members),
                       "aracte_invalide.xml": aracte}.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


def test_invalid_but_readable_files_exit_1_with_reasons(files, tmp_path):
    for name, path in _invalid_files(tmp_path, files).items():
        code, out, err = run("validate", str(path))
        _no_traceback(out, err)
        assert code == 1 and "REFUSÉ" in out and "Correction" in out, f"{name}\n{out}{err}"
        code, out, err = run("validate", "--json", str(path))
        data = _json(out)
        assert code == 1 and data["exit_code"] == 1 and data["errors"] >= 1, name
        assert all(f["message"] for f in data["findings"])


def test_seda_zip_from_another_generator_needs_no_known_agreements(files, tmp_path):
    """Was a TypeError: the CLI passed no known agreements to the package check."""
    fmt, members = _xml_members(files["seda_paquet.zip"].read_bytes())
    members["manifest.xml"] = members["manifest.xml"].replace(b"ACC-ACTES-040", b"ACCORD-AUTRE-EDITEUR")
    other = tmp_path / "autre-generateur.zip"
    other.write_bytes(_rebuild(fmt, members))
    code, out, err = run("validate", "--json", str(other))
    data = _json(out)
    assert code == 0 and data["kind"] == "seda_package", out + err
    warning = [f for f in data["findings"] if f["rule"] == "SEDA-ACCORD-NON-VERIFIE"]
    assert warning and warning[0]["value"] == "ACCORD-AUTRE-EDITEUR" and warning[0]["severity"] == "warning"


def test_sign_then_verify_round_trip(files, tmp_path):
    from flows.signature.pki import create_demo_pki

    pki = create_demo_pki(tmp_path / "pki", [("maire", "Jeanne Dupré", "Maire")], ca_key_size=2048)
    official = pki["officials"]["maire"]
    out_path = tmp_path / "signe.xml"
    code, out, err = run("sign", str(files["pes_aller.xml"]), "--out", str(out_path), "--p12", str(official["p12"]),
                         "--password-file", str(official["password_file"]), "--json")
    data = _json(out)
    assert code == 0 and data["signed"] is True and out_path.exists(), out + err
    assert Path(official["password_file"]).read_text().strip() not in out + err  # never the secret
    code, out, err = run("verify", "--json", "--trust", str(pki["ca"]), str(out_path))
    data = _json(out)
    assert code == 0 and data["exit_code"] == 0 and data["summary"]["intact"] is True, out + err
    code, out, err = run("verify", "--json", str(files["pes_aller.xml"]))  # not signed: invalid, not unreadable
    assert code == 1 and _json(out)["exit_code"] == 1
    code, out, err = run("sign", str(files["pes_aller.xml"]), "--out", str(tmp_path / "y.xml"), "--p12",
                         str(official["p12"]), "--json")
    env_less = _json(out) if code == 2 and out.strip() else None
    if os.environ.get("DEMAT_P12_PASSWORD") is None:
        assert code == 2 and env_less["error"]["rule"] == "MOT-DE-PASSE-ABSENT"


def test_missing_file_directory_and_usage_errors_exit_2(tmp_path):
    for argv in (["validate", str(tmp_path / "absent.xml")], ["inspect", str(tmp_path)], ["validate", "--json", str(tmp_path)]):
        code, out, err = run(*argv)
        _no_traceback(out, err)
        assert code == 2 and str(tmp_path) in out + err, argv
    code, out, err = run("validate", "--json")  # file argument missing
    assert code == 2 and _json(out)["error"]["rule"] == "USAGE" and "arguments obligatoires manquants" in err
    code, out, err = run("frobnicate")
    assert code == 2 and "choix invalide" in err


def test_clean_pes_never_imports_great_expectations(files):
    """The pipeline's engine choice: a small clean file goes through the row-wise engine, and never
    pays the import of Great Expectations, nor of pandas (issue 15's speed targets)."""
    probe = ("import sys\nfrom flows.cli import main\ncode = main(['validate', sys.argv[1]])\n"
             "print(code, 'great_expectations' in sys.modules, 'pandas' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", probe, str(files["pes_aller.xml"])], capture_output=True, text=True,
                       cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.strip().splitlines()[-1] == "0 False False", p.stdout + p.stderr


def test_real_demat_executable_keeps_the_contract(files, hostile_files):
    demat = Path(sys.executable).with_name("demat")
    cmd = [str(demat)] if demat.exists() else [sys.executable, "-m", "flows.cli"]
    for path, expected in ((files["seda_paquet.zip"], 0), (hostile_files[("seda_manifest.xml", "entites")], 2),
                           (hostile_files[("pes_aller.xml", "tronque")], 2)):
        p = subprocess.run([*cmd, "validate", "--json", str(path)], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
        assert p.returncode == expected and "Traceback" not in p.stderr, p.stdout + p.stderr
        assert json.loads(p.stdout)["exit_code"] == expected


def test_journal_verify_json(demat_db, tmp_path):
    """`demat journal verify --json`: one JSON document whatever the outcome (intact, forged,
    unreachable database), the same exit codes as the text output."""
    from sqlalchemy import text

    from flows.dossier import service
    from flows.dossier.db import session_scope

    with session_scope(demat_db) as s:
        d = service.create(s, collectivite="saint-sever", flow="actes", original_name="a.zip", sha256="f" * 64, size=3)
        service.transition(s, d, "valide", message="Document valide.")
    code, out, err = run("journal", "verify", "--json", "--database-url", demat_db, "--tsa-ca", str(tmp_path / "absent.pem"))
    _no_traceback(out, err)
    doc = _json(out)
    assert code == 0 and doc["valid"] is True and doc["exit_code"] == 0
    assert doc["chain"]["ok"] is True and doc["chain"]["entries"] >= 2 and doc["timestamps"] is None
    assert "Journal intègre" in doc["message"]
    with session_scope(demat_db) as s:
        s.execute(text("UPDATE journal SET message = 'Document refusé.' WHERE id = (SELECT max(id) FROM journal)"))
    code, out, err = run("journal", "verify", "--json", "--database-url", demat_db, "--tsa-ca", str(tmp_path / "absent.pem"))
    doc = _json(out)
    assert code == 1 and doc["valid"] is False and doc["chain"]["ok"] is False
    assert doc["chain"]["first_bad_id"] is not None and "ALTÉRÉ" in doc["message"]
    code, out, err = run("journal", "verify", "--json", "--database-url", "postgresql+psycopg://x:y@127.0.0.1:1/none",
                         "--tsa-ca", str(tmp_path / "absent.pem"))
    _no_traceback(out, err)
    doc = _json(out)
    assert code == 2 and doc["error"]["rule"] == "BASE-INJOIGNABLE" and "y@" not in out  # no secret echoed


@pytest.mark.parametrize("prolog", [
    b'<!DOCTYPE actes:Acte [<!ENTITY x "y">]>',
    b'<!DOCTYPE actes:Acte SYSTEM "http://example.invalid/acte.dtd">',
])
def test_acte_zip_whose_metadata_carries_a_doctype_names_it(tmp_path, prolog):
    """The metadata XML of an acte ZIP with a DOCTYPE is refused unread; the agent is told which
    file and why (not 'no metadata'), by the validator and by `demat validate`."""
    import zipfile

    from flows.actes.generate import generate_acte_zip
    from flows.actes.validate import validate_acte_zip
    from flows.config import load_config

    coll = load_config(Path(__file__).resolve().parents[2] / "flows" / "config" / "demo.yaml").collectivites[0]
    clean = generate_acte_zip(collectivite=coll, numero="2026-DT1", metadata_format="xml")
    zin = zipfile.ZipFile(io.BytesIO(clean))
    out = tmp_path / "acte_doctype.zip"
    with zipfile.ZipFile(out, "w") as z:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "acte.xml":
                data = _with_prolog(data, prolog)
            z.writestr(name, data)
    report = validate_acte_zip(out, coll)
    assert [f.rule for f in report.errors] == ["XML-DANGEREUX"]
    f = report.errors[0]
    assert "acte.xml" in f.message and "DOCTYPE" in f.message and f.value == "acte.xml"
    assert "pas de métadonnées" not in f.message and "DOCTYPE" in f.fix
    code, text_out, err = run("validate", "--json", str(out))
    _no_traceback(text_out, err)
    doc = _json(text_out)
    assert code == 2 and any(x["rule"] == "XML-DANGEREUX" and "acte.xml" in x["message"] for x in doc["findings"])  # hostile: 2
    # a ZIP without any metadata still says so
    bare = tmp_path / "sans.zip"
    with zipfile.ZipFile(bare, "w") as z:
        z.writestr("acte.pdf", zin.read([n for n in zin.namelist() if n.endswith(".pdf")][0]))
    assert [f.rule for f in validate_acte_zip(bare, coll).errors] == ["ACTES-METADONNEES-ABSENTES"]
