"""`demat`: validate, inspect, sign and verify files on their own, without Airflow.

Exit codes: 0 valid / intact, 1 invalid / broken (report printed), 2 unreadable file or usage error.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

from flows.findings import Report, UnreadableFile

KINDS = ("pes_aller", "pes_acquit", "pes_retour", "acte_zip", "actes_archive", "actes_message", "seda_package",
         "seda_message")


def _xml_root_name(head: bytes) -> str:
    from lxml import etree

    try:
        for _event, el in etree.iterparse(io.BytesIO(head), events=("start",), resolve_entities=False,
                                          no_network=True, load_dtd=False):
            return etree.QName(el).localname, etree.QName(el).namespace or ""
    except (etree.XMLSyntaxError, ValueError):  # ValueError: a malformed name such as <n:>
        pass
    return "", ""


def sniff(path: Path) -> str:
    """Guess what a file is from its content, not its name."""
    with path.open("rb") as fh:
        head = fh.read(8192)
    if not head:
        raise UnreadableFile(f"{path} : fichier vide")
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile as exc:
            raise UnreadableFile(f"{path} : archive ZIP illisible ({exc})") from exc
        return "seda_package" if "manifest.xml" in names else "acte_zip"
    if head[:2] == b"\x1f\x8b":
        try:
            with tarfile.open(path, "r:gz") as tf:
                first = [m.name for m in tf.getmembers()[:50]]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UnreadableFile(f"{path} : archive tar.gz illisible ({exc})") from exc
        return "seda_package" if "manifest.xml" in first else "actes_archive"
    name, ns = _xml_root_name(head)
    if not name:
        # the root may sit after a long prolog: read the whole start tag
        with path.open("rb") as fh:
            name, ns = _xml_root_name(fh.read(1 << 20))
    if name == "PES_Aller":
        return "pes_aller"
    if name == "PES_ACQUIT":
        return "pes_acquit"
    if name == "PES_Retour":
        return "pes_retour"
    if "interieur.gouv.fr/ACTES" in ns:
        return "actes_message"
    if "seda" in ns:
        return "seda_message"
    raise UnreadableFile(f"{path} : type de fichier non reconnu (ni PES V2, ni acte, ni message @ctes, ni SEDA)")


def validate_file(path: Path) -> Report:
    kind = sniff(path)
    if kind == "pes_aller":
        from flows.helios.validate import validate_pes

        report = validate_pes(path)
        try:
            from flows.quality.gate import run_tiers_gate

            if all(f.layer not in ("lecture", "encodage") for f in report.errors):
                report.extend(run_tiers_gate(path).findings)
        except ImportError:
            pass
        return report
    if kind == "acte_zip":
        from flows.actes.validate import validate_acte_zip

        return validate_acte_zip(path)
    if kind in ("actes_archive", "actes_message"):
        from flows.actes.validate import validate_actes_file

        return validate_actes_file(path)
    if kind == "pes_acquit":
        from flows.helios.acquit import parse_acquit

        acquit = parse_acquit(path.read_bytes())
        return Report(str(path), kind, summary={"nomfic": acquit.nomfic, "accepte": acquit.accepted,
                                               "resume": acquit.summary_fr})
    if kind == "seda_package":
        from flows.archive.check import check_package

        return Report(str(path), kind, findings=check_package(path.read_bytes(), known_agreements=None))
    if kind == "seda_message":
        from flows.archive.schemas import validate_manifest

        return Report(str(path), kind, findings=validate_manifest(path.read_bytes(), None))
    return Report(str(path), kind)


def inspect_file(path: Path) -> str:
    kind = sniff(path)
    if kind == "pes_aller":
        from flows.helios.inspect import format_inspection, inspect_pes

        return format_inspection(inspect_pes(path))
    if kind == "pes_acquit":
        from flows.helios.acquit import parse_acquit

        a = parse_acquit(path.read_bytes())
        return f"PES_ACQUIT pour {a.nomfic} : {'accepté' if a.accepted else 'refusé'}\n{a.summary_fr}"
    if kind == "pes_retour":
        from flows.helios.acquit import parse_retour

        return json.dumps(parse_retour(path.read_bytes()), ensure_ascii=False, indent=2, default=str)
    if kind in ("acte_zip", "actes_archive", "actes_message"):
        from flows.actes.inspect import inspect_actes_file

        return inspect_actes_file(path)
    if kind in ("seda_package", "seda_message"):
        from flows.archive.check import describe

        return describe(path.read_bytes())
    return kind


def _cmd_validate(args) -> int:
    report = validate_file(Path(args.file))
    print(report.to_json() if args.json else report.to_text())
    return 0 if report.ok else 1


def _cmd_inspect(args) -> int:
    print(inspect_file(Path(args.file)))
    return 0


def _cmd_sign(args) -> int:
    from flows.signature.xades import sign_pes

    password = Path(args.password_file).read_bytes().strip() if args.password_file else None
    if password is None:
        import os

        env = os.environ.get("DEMAT_P12_PASSWORD")
        if env is None:
            raise UnreadableFile("mot de passe du certificat absent : --password-file ou DEMAT_P12_PASSWORD")
        password = env.encode()
    signed = sign_pes(Path(args.file).read_bytes(), args.p12, password, role=args.role, place=args.place,
                      policy=args.policy)
    Path(args.out).write_bytes(signed)
    print(f"Fichier signé écrit : {args.out}")
    return 0


def _cmd_verify(args) -> int:
    from flows.signature.verify import verify_pes

    trust = [Path(p) for p in args.trust or []]
    report = verify_pes(Path(args.file).read_bytes(), trust_store=trust, strict=args.strict)
    print(report.to_text())
    return 0 if report.ok else 1


def _cmd_journal(args) -> int:
    from flows.dossier.db import session_scope
    from flows.dossier.journal import verify_chain
    from flows.dossier.timestamp import verify_timestamps
    from flows.settings import Settings

    settings = None if args.database_url and args.tsa_ca else Settings.from_env()
    ca = Path(args.tsa_ca) if args.tsa_ca else settings.state_dir / "tsa" / "ca.pem"
    with session_scope(args.database_url or settings.database_url) as session:
        check = verify_chain(session)
        stamps = verify_timestamps(session, ca_file=ca) if check.ok and ca.exists() else None
    if not check.ok:
        print(f"Journal ALTÉRÉ à l'entrée {check.first_bad_id} : {check.reason}.")
        return 1
    print(f"Journal intègre : {check.entries} entrée(s) vérifiée(s).")
    if stamps is None:
        print(f"Horodatages non vérifiés : autorité d'horodatage introuvable ({ca}) ; indiquez --tsa-ca.")
        return 0
    if not stamps.ok:
        print(f"Horodatage INVALIDE : {stamps.reason}.")
        return 1
    print(f"Horodatages RFC 3161 valides : {stamps.stamped} ; en attente d'horodatage : {stamps.unstamped}.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demat", description="demat : valider, inspecter, signer, vérifier")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="valider un PES, un acte, une archive @ctes, un paquet SEDA")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("inspect", help="résumer un fichier")
    p.add_argument("file")
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("sign", help="signer chaque bordereau d'un PES (XAdES, politique DGFiP)")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--p12", required=True)
    p.add_argument("--password-file")
    p.add_argument("--role", default="Ordonnateur")
    p.add_argument("--place")
    p.add_argument("--policy", default="1.7", choices=["1.7", "1.4"])
    p.set_defaults(func=_cmd_sign)
    p = sub.add_parser("verify", help="vérifier les signatures d'un PES")
    p.add_argument("file")
    p.add_argument("--trust", action="append", help="certificat ou dossier d'autorités de confiance")
    p.add_argument("--strict", action="store_true")
    p.set_defaults(func=_cmd_verify)
    p = sub.add_parser("journal", help="vérifier le chaînage du journal et ses horodatages RFC 3161")
    p.add_argument("action", choices=["verify"])
    p.add_argument("--database-url")
    p.add_argument("--tsa-ca", help="certificat racine de l'autorité d'horodatage (défaut : <état>/tsa/ca.pem)")
    p.set_defaults(func=_cmd_journal)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code else 0
    try:
        return args.func(args)
    except (UnreadableFile, FileNotFoundError, IsADirectoryError, PermissionError, gzip.BadGzipFile) as exc:
        print(f"Erreur : {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
