"""Describe an @ctes file in French for an agent: an acte ZIP, an archive, or one message."""

from __future__ import annotations

from pathlib import Path

from flows.findings import UnreadableFile


def inspect_actes_file(path: str | Path) -> str:
    from flows.actes.intake import SubmissionError, read_submission
    from flows.actes.messages import MessageError, parse_message, read_archive
    from flows.actes.safearchive import UnsafeArchive

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"{path} : {exc}") from exc
    if data[:2] == b"PK":
        try:
            sub = read_submission(data)
        except SubmissionError as exc:
            return f"Dépôt d'acte {path.name} illisible : {exc}"
        md = sub.metadata
        lines = [
            f"Dépôt d'acte {path.name} (métadonnées {sub.metadata_format.upper()} : {sub.metadata_file})",
            f"  Numéro interne : {md.numero_interne}",
            f"  Nature : {md.nature} ({md.nature_label})",
            f"  Matière : {md.matiere}",
            f"  Objet : {md.objet}",
            f"  Date de décision : {md.date_decision:%d/%m/%Y}",
            f"  Date de classification : {md.classification_date or '(celle en vigueur)'}",
            f"  Acte : {sub.document.name} ({len(sub.document.data)} octets, typologie {sub.document.typologie})",
        ]
        lines += [f"  Annexe : {a.name} ({len(a.data)} octets, typologie {a.typologie})" for a in sub.annexes]
        lines += [f"  Fichier non cité : {n}" for n in sub.unreferenced]
        return "\n".join(lines)
    if data[:2] == b"\x1f\x8b" or data[257:262] == b"ustar":
        try:
            archive = read_archive(data, path.name)
        except UnsafeArchive as exc:
            return f"Archive {path.name} refusée : {exc}"
        lines = [f"Archive @ctes {path.name}", f"  Enveloppe : {archive.envelope_name or '(absente)'}"]
        if archive.envelope is not None:
            lines.append(f"  {archive.envelope.summary_fr}")
        for m in archive.messages:
            lines.append(f"  - {m.name} : {m.label_fr} ({m.code})")
            lines.append(f"    {m.summary_fr}")
        lines += [f"  Document : {d} ({len(b)} octets)" for d, b in archive.documents.items()]
        lines += [f"  Problème : {p}" for p in archive.problems]
        return "\n".join(lines)
    try:
        m = parse_message(data, path.name)
    except MessageError as exc:
        return f"{path.name} : {exc}"
    lines = [f"Message @ctes {path.name} : {m.label_fr} ({m.code or m.kind})"]
    if m.idacte:
        lines.append(f"  IDActe : {m.idacte}")
    if m.date:
        lines.append(f"  Date : {m.date:%d/%m/%Y}")
    if m.nature:
        lines.append(f"  Nature de l'anomalie : {m.nature} ({m.nature_label})")
    if m.detail:
        lines.append(f"  Détail : {m.detail}")
    lines += [f"  Document : {d}" for d in m.documents]
    lines.append(f"  {m.summary_fr}")
    if m.schema_errors:
        lines.append(f"  Non conforme au schéma : {'; '.join(m.schema_errors[:3])}")
    return "\n".join(lines)
