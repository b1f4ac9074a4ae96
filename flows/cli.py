"""`demat`: validate, inspect, sign and verify files on their own, without Airflow.

The contract (README, tests/unit/test_cli_contract.py), for every command and every kind of file:
  exit 0  valid / intact / done;
  exit 1  invalid: the file was read, and a report says what is wrong and how to fix it;
  exit 2  unreadable or hostile (empty, truncated, binary, DOCTYPE or entities, unknown kind,
          dangerous archive), or a usage error: a French message names the file, the rule, the fix.
Never a Python traceback (DEMAT_DEBUG=1 shows one for the support desk). With `--json`, standard
output is always one JSON document, whatever the exit code.

Fast on small files: nothing heavy is imported at module level, and the tiers gate uses the
pipeline's engine choice ("auto": pandas first, Great Expectations only when pandas finds something).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from flows.findings import Finding, Report, UnreadableFile

EXIT_VALID, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2
KINDS = ("pes_aller", "pes_acquit", "pes_retour", "acte_zip", "actes_archive", "actes_message", "seda_package",
         "seda_message")
KIND_LABELS = {
    "pes_aller": "PES_Aller (flux comptable PES V2)",
    "pes_acquit": "PES_ACQUIT (accusé de réception Hélios)",
    "pes_retour": "PES_Retour (retour Hélios)",
    "acte_zip": "dépôt d'acte (ZIP)",
    "actes_archive": "archive @ctes",
    "actes_message": "message @ctes",
    "seda_package": "paquet SEDA",
    "seda_message": "message SEDA",
}
# Findings of these layers mean the file could not be read, or was refused unread for safety.
READING_LAYERS = frozenset({"lecture", "securite"})
READING_RULES = frozenset({"SIG-DOC-LECTURE"})


class Refused(Exception):
    """The file cannot be taken at all: exit 2 with a French message (rule and fix)."""

    def __init__(self, path: Path | str, message: str, *, rule: str = "FICHIER-ILLISIBLE", fix: str = "",
                 kind: str | None = None):
        super().__init__(message)
        self.path, self.message, self.rule, self.fix, self.kind = str(path), message, rule, fix, kind


def _xml_root_name(head: bytes) -> tuple[str, str]:
    import io

    from lxml import etree

    try:
        for _event, el in etree.iterparse(io.BytesIO(head), events=("start",), resolve_entities=False,
                                          no_network=True, load_dtd=False, huge_tree=False):
            q = etree.QName(el)
            return q.localname, q.namespace or ""
    except (etree.XMLSyntaxError, ValueError):  # ValueError: a malformed name such as <n:>
        pass
    return "", ""


def _archive_names(path: Path, head: bytes) -> list[str]:
    import tarfile
    import zipfile
    import zlib

    try:
        if head.startswith(b"PK"):
            with zipfile.ZipFile(path) as zf:
                return zf.namelist()
        with tarfile.open(path, "r:*") as tf:
            names = []
            for m in tf:
                names.append(m.name.removeprefix("./"))
                if len(names) >= 50:
                    break
            return names
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
        what = "ZIP" if head.startswith(b"PK") else "tar"
        raise Refused(path, f"archive {what} illisible (tronquée ou corrompue) : {_fr_error(exc)}",
                      rule="ARCHIVE-ILLISIBLE", fix="Renvoyez l'archive complète, telle que produite par l'outil d'origine.") from exc


def sniff(path: Path) -> str:
    """What a file is, from its content (never its name). Refused (exit 2) when it cannot be told."""
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except IsADirectoryError as exc:
        raise Refused(path, "c'est un dossier, pas un fichier", rule="FICHIER-ABSENT",
                      fix="Indiquez le chemin d'un fichier.") from exc
    except FileNotFoundError as exc:
        raise Refused(path, "fichier introuvable", rule="FICHIER-ABSENT", fix="Vérifiez le chemin du fichier.") from exc
    except OSError as exc:
        raise Refused(path, f"lecture impossible ({_fr_error(exc)})", rule="FICHIER-ILLISIBLE",
                      fix="Vérifiez les droits sur le fichier.") from exc
    if not head.strip(b" \t\r\n\x00\xef\xbb\xbf\xfe\xff"):
        raise Refused(path, "fichier vide", rule="FICHIER-VIDE", fix="Renvoyez le fichier complet : il ne contient rien.")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        names = _archive_names(path, head)
        return "seda_package" if "manifest.xml" in names else "acte_zip"
    if head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar":
        names = _archive_names(path, head)
        return "seda_package" if "manifest.xml" in names else "actes_archive"
    from flows import xmlsafe

    try:
        xmlsafe.check_prolog(head)
    except xmlsafe.UnsafeXML as exc:
        raise Refused(path, f"{exc} Le fichier n'est pas lu (protection contre les attaques XXE et par expansion "
                      "d'entités).", rule="XML-DANGEREUX",
                      fix="Exportez le document sans déclaration DOCTYPE ni entités depuis le logiciel d'origine.") from exc
    name, ns = _xml_root_name(head)
    if name == "PES_Aller":
        return "pes_aller"
    if name == "PES_ACQUIT":
        return "pes_acquit"
    if name == "PES_Retour":
        return "pes_retour"
    if "interieur.gouv.fr/ACTES" in ns:
        return "actes_message"
    if "archivesdefrance:seda" in ns:
        return "seda_message"
    if b"\x00" in head[:4096] and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        why = "contenu binaire (ni XML, ni ZIP, ni tar.gz)"
    elif not name:
        why = "ni XML lisible, ni archive ZIP ou tar.gz (fichier tronqué, binaire ou d'un autre format)"
    else:
        why = f"élément racine « {name} » inconnu"
    raise Refused(path, f"type de fichier non reconnu : {why}", rule="TYPE-INCONNU",
                  fix="demat lit les PES V2 (PES_Aller, PES_ACQUIT, PES_Retour), les actes et messages @ctes, "
                      "les paquets et messages SEDA.")


def _fr_error(exc: BaseException) -> str:
    """An exception told in French; the library's English text follows in parentheses."""
    raw = str(exc) or type(exc).__name__
    try:
        from lxml import etree
    except ImportError:  # pragma: no cover
        etree = None
    if etree is not None and isinstance(exc, etree.XMLSyntaxError):
        try:
            from flows.helios.xsdtext import syntax_fr
        except ImportError:
            return f"XML mal formé (libxml2 : {raw})"
        return syntax_fr(getattr(exc, "msg", None) or raw)
    known = (
        ("Compressed file ended before", "archive compressée tronquée"),
        ("File is not a zip file", "ce n'est pas une archive ZIP valide (fichier tronqué ?)"),
        ("not a gzip file", "ce n'est pas un fichier gzip valide"),
        ("unexpected end of data", "fin de données inattendue (fichier tronqué)"),
        ("invalid header", "en-tête d'archive invalide"),
        ("Bad CRC-32", "somme de contrôle CRC fausse (fichier altéré)"),
        ("empty file", "fichier vide"),
        ("Permission denied", "permission refusée"),
        ("No such file or directory", "fichier ou dossier introuvable"),
        ("Is a directory", "c'est un dossier"),
    )
    for needle, text in known:
        if needle.lower() in raw.lower():
            return f"{text} ({raw})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"erreur système ({exc.strerror})"
    return raw


# --- validate -----------------------------------------------------------------------------------


def _pes_aller(path: Path) -> Report:
    from flows.helios.validate import validate_pes_with_tiers

    report, rows = validate_pes_with_tiers(path)  # one streaming pass: schema, rules and the tiers
    if all(f.layer not in ("lecture", "encodage") for f in report.errors):
        from flows.quality.gate import run_tiers_gate

        # the pipeline's engine choice: pandas first, Great Expectations only when pandas finds something
        report.extend(run_tiers_gate(path, engine="auto", rows=rows).findings)
    return report


def _pes_acquit(path: Path) -> Report:
    from flows.helios import acquit as acquit_mod

    if hasattr(acquit_mod, "validate_acquit"):
        return acquit_mod.validate_acquit(path)
    a = acquit_mod.parse_acquit(path.read_bytes())
    return Report(str(path), "pes_acquit", summary={"nomfic": a.nomfic, "accepte": a.accepted, "resume": a.summary_fr})


def _pes_retour(path: Path) -> Report:
    from flows.helios.acquit import parse_retour

    info = parse_retour(path.read_bytes())
    report = Report(str(path), "pes_retour", summary=info)
    if not info.get("namespace_ok", True):
        report.add(Finding("PES-RETOUR-ESPACE-DE-NOMS", "Le PES_Retour n'est pas dans l'espace de noms de Hélios.",
                           "Vérifiez que le fichier vient de Hélios sans modification.", severity="warning",
                           layer="xsd"))
    return report


def validate_file(path: Path) -> Report:
    """The report of any file demat knows. Refused (exit 2) when its kind cannot be told."""
    kind = sniff(path)
    if kind == "pes_aller":
        return _pes_aller(path)
    if kind == "acte_zip":
        from flows.actes.validate import validate_acte_zip

        return validate_acte_zip(path)
    if kind in ("actes_archive", "actes_message"):
        from flows.actes.validate import validate_actes_file

        return validate_actes_file(path)
    if kind == "pes_acquit":
        return _pes_acquit(path)
    if kind == "pes_retour":
        return _pes_retour(path)
    if kind == "seda_package":
        from flows.archive.check import check_package

        # demat knows no archive system here: the agreement is read, not judged (a warning says so)
        return Report(str(path), kind, findings=check_package(path, known_agreements=None))
    from flows.archive.schemas import SchemaUnavailable, validate_manifest

    try:
        return Report(str(path), kind, findings=validate_manifest(path.read_bytes(), None))
    except SchemaUnavailable as exc:
        raise Refused(path, str(exc), rule="SEDA-SCHEMA-INDISPONIBLE", kind=kind,
                      fix="Faute de l'installation, pas du fichier : réinstallez demat.") from exc


def exit_code(report: Report) -> int:
    if report.ok:
        return EXIT_VALID
    unreadable = any(f.layer in READING_LAYERS or f.rule in READING_RULES for f in report.errors)
    return EXIT_UNREADABLE if unreadable else EXIT_INVALID


# --- inspect ------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def _describe_seda_package(path: Path) -> tuple[str, dict]:
    from flows.archive.check import read_package

    info = read_package(path)
    lines = [
        f"Paquet SEDA {info['version'] or '?'} ({info['format']}) : {path.name}",
        f"  Bordereau : {info['message']} {info['message_identifier'] or '(sans identifiant)'} du {info['date'] or '?'}",
        f"  Accord de versement : {info['archival_agreement'] or '(aucun)'} ; profil : {info['archival_profile'] or '(aucun)'}",
        f"  Service d'archives : {info['archival_agency'] or '?'} ; service versant : {info['transferring_agency'] or '?'}",
        f"  Producteur : {info['originating_agency'] or '?'}",
        f"  {len(info['units'])} unité(s) d'archives, {len(info['objects'])} objet(s), "
        f"{len(info['files'])} fichier(s), {info['total_size']} octets",
    ]
    for u in info["units"]:
        lines.append(f"  {'  ' * u['depth']}- [{u['level'] or '?'}] {u['title'] or '(sans titre)'}")
    for o in info["objects"]:
        where = "présent" if o["in_package"] else "ABSENT du paquet"
        lines.append(f"  Objet {o['id']} : {o['uri']} ({o['size']} octets déclarés, {o['mime'] or 'format ?'}, {where})")
    lines += [f"  Avertissement : {w}" for w in info["warnings"]]
    return "\n".join(lines), info


def _describe_seda_message(path: Path) -> tuple[str, dict]:
    from lxml import etree

    from flows import xmlsafe
    from flows.archive.replies import parse_reply
    from flows.archive.schemas import version_of_namespace

    data = path.read_bytes()
    root = xmlsafe.parse_bytes(data)
    q = etree.QName(root)
    if q.localname in ("Acknowledgement", "ArchiveTransferReply"):
        reply = parse_reply(data)
        title = "Accusé de réception SEDA" if reply.kind == "acknowledgement" else "Réponse au transfert SEDA"
        lines = [f"{title} {reply.version} : {path.name}",
                 f"  Identifiant : {reply.message_identifier} du {reply.date}",
                 f"  Répond au transfert : {reply.refers_to or '(non indiqué)'}"]
        if reply.kind == "transfer_reply":
            lines.append(f"  Code de réponse : {reply.reply_code or '(absent)'} : "
                         f"{'accepté' if reply.accepted else 'non accepté'}"
                         + (f", archive {reply.archive_id}" if reply.archive_id else ""))
        lines.append(f"  {reply.reason_fr}")
        return "\n".join(lines), asdict(reply)
    ns = {"s": q.namespace or ""}

    def t(p: str) -> str | None:
        e = root.find(p, ns)
        return " ".join(e.text.split()) if e is not None and e.text and e.text.strip() else None

    info = {
        "message": q.localname, "version": version_of_namespace(q.namespace),
        "message_identifier": t("s:MessageIdentifier"), "date": t("s:Date"),
        "archival_agreement": t("s:ArchivalAgreement"),
        "objects": len(root.findall(".//s:BinaryDataObject", ns)),
        "units": len(root.findall(".//s:ArchiveUnit", ns)),
    }
    lines = [f"Message SEDA {info['version'] or '?'} {info['message']} : {path.name}",
             f"  Identifiant : {info['message_identifier'] or '(absent)'} du {info['date'] or '?'}",
             f"  Accord de versement : {info['archival_agreement'] or '(aucun)'}",
             f"  {info['units']} unité(s) d'archives, {info['objects']} objet(s) décrits"]
    return "\n".join(lines), info


def inspect_file(path: Path) -> tuple[str, str, Any]:
    """(kind, French text, data for --json) of a readable file; Refused or a report (exit 2) otherwise."""
    kind = sniff(path)
    if kind == "pes_aller":
        from flows.helios.inspect import format_inspection, inspect_pes

        info = inspect_pes(path)
        return kind, format_inspection(info), info
    # the other kinds are read in full by their validator first: an unreadable or hostile file
    # (truncated, DOCTYPE inside an archive, ...) is refused with the same words as `validate`
    report = validate_file(path)
    if exit_code(report) == EXIT_UNREADABLE:
        raise _Unreadable(report)
    if kind == "pes_acquit":
        from flows.helios.acquit import parse_acquit

        a = parse_acquit(path.read_bytes())
        return kind, (f"PES_ACQUIT {path.name} pour {a.nomfic} : {'accepté' if a.accepted else 'refusé'}\n"
                      f"{a.summary_fr}"), a
    if kind == "pes_retour":
        info = report.summary
        lines = [f"PES_Retour {path.name} : {info.get('nomfic') or '?'} du {info.get('dtestr') or '?'} (poste {info.get('idpost') or '?'}, "
                 f"collectivité {info.get('idcoll') or '?'}, budget {info.get('codbud') or '?'})"]
        lines.append(f"  Domaines : {', '.join(info.get('domaines') or []) or '(aucun)'} ; "
                     f"{len(info.get('bordereaux') or [])} bordereau(x)")
        if info.get("resume"):
            lines.append(f"  {info['resume']}")
        return kind, "\n".join(lines), info
    if kind in ("acte_zip", "actes_archive", "actes_message"):
        from flows.actes.inspect import inspect_actes_file

        text = inspect_actes_file(path)
        return kind, text, {"texte": text, "resume": report.summary}
    if kind == "seda_package":
        text, info = _describe_seda_package(path)
        return kind, text, info
    text, info = _describe_seda_message(path)
    return kind, text, info


class _Unreadable(Exception):
    def __init__(self, report: Report):
        super().__init__(report.file)
        self.report = report


# --- output -------------------------------------------------------------------------------------


def _emit_refused(exc: Refused, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"file": exc.path, "kind": exc.kind, "valid": False, "exit_code": EXIT_UNREADABLE,
                          "error": {"rule": exc.rule, "message": exc.message, "fix": exc.fix}},
                         ensure_ascii=False, indent=2))
    else:
        print(f"Erreur [{exc.rule}] : {exc.path} : {exc.message}" + (f"\n    Correction : {exc.fix}" if exc.fix else ""),
              file=sys.stderr)
    return EXIT_UNREADABLE


def _emit_report(report: Report, as_json: bool, code: int) -> int:
    if as_json:
        data = report.to_dict()
        data["exit_code"] = code
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        text = report.to_text()
        if code == EXIT_UNREADABLE:
            text = text.replace("Résultat : REFUSÉ", "Résultat : ILLISIBLE OU REFUSÉ SANS LECTURE", 1)
        print(text)
    return code


def _guard(path_arg: str, as_json: bool, fn) -> int:
    """Run one command on one file: every failure becomes exit 2 with a French message, never a traceback."""
    import tarfile
    import zipfile
    import zlib

    from lxml import etree

    from flows import xmlsafe

    path = Path(path_arg)
    try:
        return fn(path)
    except BrokenPipeError:
        raise  # stdout closed by the reader (| head): main() ends quietly
    except Refused as exc:
        return _emit_refused(exc, as_json)
    except _Unreadable as exc:
        return _emit_report(exc.report, as_json, EXIT_UNREADABLE)
    except xmlsafe.UnsafeXML as exc:
        return _emit_refused(Refused(path, str(exc), rule="XML-DANGEREUX",
                                     fix="Exportez le document sans DOCTYPE ni entités, sous la taille maximale."), as_json)
    except UnreadableFile as exc:
        message = str(exc)
        cause = exc.__cause__
        if cause is not None and str(cause) and str(cause) in message:  # the library's English, told in French
            message = message.replace(str(cause), _fr_error(cause))
        return _emit_refused(Refused(path, message, rule="FICHIER-ILLISIBLE",
                                     fix="Renvoyez le fichier complet, tel que produit par le logiciel d'origine."), as_json)
    except etree.XMLSyntaxError as exc:
        return _emit_refused(Refused(path, f"XML mal formé : {_fr_error(exc)}", rule="XML-MALFORME",
                                     fix="Le fichier est tronqué ou abîmé : renvoyez-le complet."), as_json)
    except (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile) as exc:
        return _emit_refused(Refused(path, f"lecture impossible : {_fr_error(exc)}", rule="FICHIER-ILLISIBLE",
                                     fix="Vérifiez le fichier (complet, non corrompu, droits de lecture)."), as_json)
    except (MemoryError, RecursionError) as exc:
        return _emit_refused(Refused(path, f"fichier refusé : trop gros ou trop profondément imbriqué ({type(exc).__name__})",
                                     rule="FICHIER-DEMESURE", fix="Découpez le document."), as_json)
    except Exception as exc:  # noqa: BLE001 - the contract: never a traceback for an agent
        if os.environ.get("DEMAT_DEBUG"):
            raise
        return _emit_refused(Refused(path, f"erreur interne de demat en lisant ce fichier ({type(exc).__name__} : "
                                     f"{str(exc)[:300]})", rule="ERREUR-INTERNE",
                                     fix="Signalez-la au support avec le fichier ; DEMAT_DEBUG=1 affiche le détail."),
                             as_json)


# --- commands -----------------------------------------------------------------------------------


def _cmd_validate(args) -> int:
    def run(path: Path) -> int:
        report = validate_file(path)
        return _emit_report(report, args.json, exit_code(report))

    return _guard(args.file, args.json, run)


def _cmd_inspect(args) -> int:
    def run(path: Path) -> int:
        kind, text, data = inspect_file(path)
        if args.json:
            print(json.dumps({"file": str(path), "kind": kind, "exit_code": EXIT_VALID, "inspection": _jsonable(data)},
                             ensure_ascii=False, indent=2, default=str))
        else:
            print(text)
        return EXIT_VALID

    return _guard(args.file, args.json, run)


def _pes_only(path: Path) -> bytes:
    kind = sniff(path)
    if kind != "pes_aller":
        raise Refused(path, f"ce fichier est un {KIND_LABELS[kind]}, pas un PES_Aller", rule="TYPE-INATTENDU", kind=kind,
                      fix="Seuls les PES_Aller se signent et se vérifient ici.")
    return path.read_bytes()


def _cmd_sign(args) -> int:
    def run(path: Path) -> int:
        from flows import xmlsafe
        from flows.signature.xades import sign_pes

        pes = _pes_only(path)
        xmlsafe.parse_bytes(pes)  # a truncated or hostile PES is refused before any key is opened
        from flows.helios.validate import signing_problems

        problems = signing_problems(pes, name=path.name)  # signing must not make a valid file invalid
        if problems:
            return _emit_report(Report(str(path), "pes_aller", findings=problems), args.json, EXIT_INVALID)
        if args.password_file:
            try:
                password = Path(args.password_file).read_bytes().strip()
            except OSError as exc:
                raise Refused(args.password_file, f"fichier du mot de passe illisible ({_fr_error(exc)})",
                              rule="MOT-DE-PASSE-ABSENT", fix="Indiquez un fichier lisible avec --password-file.") from exc
        elif os.environ.get("DEMAT_P12_PASSWORD") is not None:
            password = os.environ["DEMAT_P12_PASSWORD"].encode()
        else:
            raise Refused(path, "mot de passe du certificat absent", rule="MOT-DE-PASSE-ABSENT",
                          fix="Indiquez --password-file ou la variable DEMAT_P12_PASSWORD.")
        try:
            signed = sign_pes(pes, args.p12, password, role=args.role, place=args.place, policy=args.policy)
        except ValueError as exc:  # CertificateRefused and the signer's French refusals
            outcome = {"file": str(path), "kind": "pes_aller", "signed": False, "exit_code": EXIT_INVALID,
                       "error": {"rule": "SIGNATURE-REFUSEE", "message": str(exc),
                                 "fix": "Corrigez le fichier ou le certificat indiqué, puis signez à nouveau."}}
            if args.json:
                print(json.dumps(outcome, ensure_ascii=False, indent=2))
            else:
                print(f"Signature refusée : {path} : {exc}", file=sys.stderr)
            return EXIT_INVALID
        Path(args.out).write_bytes(signed)
        if args.json:
            print(json.dumps({"file": str(path), "kind": "pes_aller", "signed": True, "out": args.out,
                              "exit_code": EXIT_VALID}, ensure_ascii=False, indent=2))
        else:
            print(f"Fichier signé écrit : {args.out}")
        return EXIT_VALID

    return _guard(args.file, args.json, run)


def _cmd_verify(args) -> int:
    def run(path: Path) -> int:
        from flows.signature.verify import verify_pes

        pes = _pes_only(path)
        trust = [Path(p) for p in args.trust or []]
        result = verify_pes(pes, trust_store=trust, strict=args.strict)
        report = result.to_report(str(path))
        code = EXIT_VALID if result.ok else (EXIT_UNREADABLE if any(f.rule in READING_RULES for f in report.errors)
                                              else EXIT_INVALID)
        if args.json or code == EXIT_UNREADABLE:
            return _emit_report(report, args.json, code)
        print(f"Fichier : {path}\n{result.to_text()}")
        return code

    return _guard(args.file, args.json, run)


def _cmd_journal(args) -> int:
    from flows.dossier.db import session_scope
    from flows.dossier.journal import verify_chain
    from flows.dossier.timestamp import verify_timestamps
    from flows.settings import Settings

    def out(code: int, text: str, **data) -> int:
        """The French text, or with --json one JSON document on stdout (whatever the result)."""
        if args.json:
            print(json.dumps({"valid": code == EXIT_VALID, "exit_code": code, **data, "message": text},
                             ensure_ascii=False, indent=2, default=str))
        else:
            print(text, file=sys.stderr if code == EXIT_UNREADABLE else sys.stdout)
        return code

    try:
        settings = None if args.database_url and args.tsa_ca else Settings.from_env()
        ca = Path(args.tsa_ca) if args.tsa_ca else settings.state_dir / "tsa" / "ca.pem"
        with session_scope(args.database_url or settings.database_url) as session:
            check = verify_chain(session)
            stamps = verify_timestamps(session, ca_file=ca) if check.ok and ca.exists() else None
    except Exception as exc:  # noqa: BLE001 - database unreachable, bad URL: exit 2, no traceback
        if os.environ.get("DEMAT_DEBUG"):
            raise
        return out(EXIT_UNREADABLE,
                   f"Erreur [BASE-INJOIGNABLE] : base de données du journal injoignable ({type(exc).__name__}).\n"
                   "    Correction : indiquez --database-url ou DEMAT_DATABASE_URL, et vérifiez que la base répond.",
                   error={"rule": "BASE-INJOIGNABLE", "fix": "indiquez --database-url ou DEMAT_DATABASE_URL, "
                          "et vérifiez que la base répond"})
    chain = {"ok": check.ok, "entries": check.entries, "first_bad_id": check.first_bad_id, "reason": check.reason}
    if not check.ok:
        return out(EXIT_INVALID, f"Journal ALTÉRÉ à l'entrée {check.first_bad_id} : {check.reason}.", chain=chain)
    text = f"Journal intègre : {check.entries} entrée(s) vérifiée(s)."
    if stamps is None:
        return out(EXIT_VALID, text + f"\nHorodatages non vérifiés : autorité d'horodatage introuvable ({ca}) ;"
                   " indiquez --tsa-ca.", chain=chain, timestamps=None)
    ts = {"ok": stamps.ok, "stamped": stamps.stamped, "unstamped": stamps.unstamped, "reason": stamps.reason}
    if not stamps.ok:
        return out(EXIT_INVALID, text + f"\nHorodatage INVALIDE : {stamps.reason}.", chain=chain, timestamps=ts)
    return out(EXIT_VALID, text + f"\nHorodatages RFC 3161 valides : {stamps.stamped} ; en attente d'horodatage :"
               f" {stamps.unstamped}.", chain=chain, timestamps=ts)


_USAGE_FR = (("the following arguments are required", "arguments obligatoires manquants"),
             ("invalid choice", "choix invalide"), ("unrecognized arguments", "arguments inconnus"),
             ("expected one argument", "une valeur est attendue"), ("choose from", "choisir parmi"))


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in French; exit 2 (usage error)."""

    def error(self, message: str):
        for en, fr in _USAGE_FR:
            message = message.replace(en, fr)
        self.print_usage(sys.stderr)
        print(f"Erreur [USAGE] : {message}\n    Correction : demat --help ou demat <commande> --help.", file=sys.stderr)
        raise SystemExit(EXIT_UNREADABLE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="demat", description="demat : valider, inspecter, signer, vérifier",
                     epilog="Codes de sortie : 0 valide, 1 invalide, 2 illisible, hostile ou erreur d'usage.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("validate", help="valider un PES, un acte, une archive @ctes, un paquet ou message SEDA")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="un document JSON sur la sortie standard, quel que soit le résultat")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("inspect", help="résumer un fichier")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("sign", help="signer chaque bordereau d'un PES (XAdES, politique DGFiP)")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--p12", required=True)
    p.add_argument("--password-file")
    p.add_argument("--role", default="Ordonnateur")
    p.add_argument("--place")
    p.add_argument("--policy", default="1.7", choices=["1.7", "1.4"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_sign)
    p = sub.add_parser("verify", help="vérifier les signatures d'un PES")
    p.add_argument("file")
    p.add_argument("--trust", action="append", help="certificat ou dossier d'autorités de confiance")
    p.add_argument("--strict", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_verify)
    p = sub.add_parser("journal", help="vérifier le chaînage du journal et ses horodatages RFC 3161")
    p.add_argument("action", choices=["verify"])
    p.add_argument("--database-url")
    p.add_argument("--tsa-ca", help="certificat racine de l'autorité d'horodatage (défaut : <état>/tsa/ca.pem)")
    p.add_argument("--json", action="store_true", help="un document JSON sur la sortie standard, quel que soit le résultat")
    p.set_defaults(func=_cmd_journal)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        if exc.code and "--json" in (argv if argv is not None else sys.argv[1:]):
            print(json.dumps({"valid": False, "exit_code": EXIT_UNREADABLE,
                              "error": {"rule": "USAGE", "message": "ligne de commande invalide (détail sur la sortie d'erreur)",
                                        "fix": "demat --help"}}, ensure_ascii=False, indent=2))
        return EXIT_UNREADABLE if exc.code else EXIT_VALID
    try:
        return args.func(args)
    except BrokenPipeError:  # `demat validate f | head`: the reader left, not an error of the file
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_UNREADABLE


if __name__ == "__main__":
    sys.exit(main())
