"""Findings and reports shared by every validator.

A finding tells a French-speaking agent what is wrong, where, with which value, and how to fix it.
Validators never stop at the first finding: they collect them all into a Report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    rule: str  # stable code, e.g. "PES-NBRPCE", "XSD", "ENCODAGE"
    message: str  # French: what is wrong
    fix: str = ""  # French: how to correct it
    place: str = ""  # French: where (e.g. "bordereau 12 / pièce 3 / ligne 1 / tiers")
    value: str = ""  # the offending value, as read
    severity: Severity = "error"
    layer: str = ""  # "lecture", "encodage", "xsd", "metier", "qualite", "signature", ...
    line: int | None = None

    def to_text(self) -> str:
        parts = [f"[{'ERREUR' if self.severity == 'error' else 'AVERTISSEMENT'}] {self.rule}"]
        if self.place:
            parts.append(f"({self.place})")
        if self.line:
            parts.append(f"ligne {self.line}")
        text = " ".join(parts) + f" : {self.message}"
        if self.value:
            text += f" (valeur lue : « {self.value} »)"
        if self.fix:
            text += f"\n    Correction : {self.fix}"
        return text


@dataclass
class Report:
    """The outcome of validating one file: every finding plus a summary of what was read."""

    file: str
    kind: str  # "pes_aller", "pes_acquit", "acte_zip", "actes_archive", "actes_message", "seda_package", ...
    findings: list[Finding] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def extend(self, findings: list[Finding]) -> None:
        self.findings.extend(findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "kind": self.kind,
            "valid": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
            "summary": self.summary,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2, default=str)

    def to_text(self) -> str:
        head = f"Fichier : {self.file}\nType : {self.kind}\n"
        if self.ok:
            head += "Résultat : VALIDE"
            if self.warnings:
                head += f" ({len(self.warnings)} avertissement(s))"
        else:
            head += f"Résultat : REFUSÉ ({len(self.errors)} erreur(s), {len(self.warnings)} avertissement(s))"
        body = "\n".join(f.to_text() for f in self.findings)
        return head + ("\n\n" + body if body else "") + "\n"


class UnreadableFile(Exception):
    """The file cannot be read at all (missing, empty, not the expected kind). CLI exit code 2."""
