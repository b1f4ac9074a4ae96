"""The tiers rules evaluated record by record, in plain Python: the engine of small files.

A PES of a few KB carries a handful of tiers; building a pandas frame for them costs a third of a
second of imports alone, far more than the check. This engine runs the SAME declarations
(`flows.quality.rules.build_rules`: each Rule's `fails`, the scalar twin of its `failing` mask)
over records prepared exactly as `rules.prepare` prepares the frame. The per-field checks below
are scalar twins of flows.quality.checks' vectorised ones; tests/unit/quality/test_rowwise.py
proves both engines flag the same occurrences with the same places and values, and both check
functions give the same verdicts (hostile values included). Nothing here imports numpy or pandas.
"""

from __future__ import annotations

import re

from flows.findings import Finding
from flows.quality.extract import BLOCK_COLUMNS, COLUMNS, TIERS_FIELDS
from flows.quality.rules import ID_FORMATS, Rule, build_rules, load_params, rule_columns

# Above this many occurrences the vectorised pandas engine is used (its memory per occurrence is smaller).
MAX_ROWS = 300_000

LA_POSTE_SIREN = "356000000"
LA_POSTE_SIEGE = "35600000000048"
_RIB_LETTERS = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "12345678912345678923456789")
_FIELDS = TIERS_FIELDS + BLOCK_COLUMNS
_IDX = {c: i for i, c in enumerate(COLUMNS)}
_CONTEXT = frozenset(("flux", "bordereau", "exercice", "piece", "ligne", "position", "line"))
_RIB_COLS = ("CodeEtab", "CodeGuic", "IdCpte", "CleRib")
_FR_IBAN = re.compile(r"(?:FR|MC|GF|GP|MQ|RE|YT|NC|PF|PM|BL|MF|WF|TF)[0-9]{2}[0-9]{10}[A-Z0-9]{11}[0-9]{2}")
_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{1,30}")
_ALNUM5 = re.compile(r"[0-9A-Za-z]{5}")
_ALNUM11 = re.compile(r"[0-9A-Za-z]{11}")
_KEY2 = re.compile(r"[0-9]{2}")
_NIR = re.compile(r"[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}")
_FINESS_CORSE = re.compile(r"2[AB][0-9]{7}")
_DIGITS = {n: re.compile(rf"[0-9]{{{n}}}") for n in (9, 14)}
_ID_FORMATS = {code: re.compile(p) for code, p in ID_FORMATS.items()}


# --------------------------------------------------------------------------- scalar twins of checks


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_ok(value: str | None, length: int) -> bool:
    return isinstance(value, str) and _DIGITS[length].fullmatch(value) is not None and _luhn(value)


def siren_ok(value: str | None) -> bool:
    return luhn_ok(value, 9)


def siret_ok(value: str | None) -> bool:
    """checks.siret_valid on one value (La Poste establishments: digit sum multiple of 5)."""
    if not (isinstance(value, str) and _DIGITS[14].fullmatch(value)):
        return False
    if value.startswith(LA_POSTE_SIREN) and value != LA_POSTE_SIEGE:
        head = sum(ord(c) - 48 for c in value) % 5 == 0
    else:
        head = _luhn(value)
    return head and _luhn(value[:9])


def finess_ok(value: str | None) -> bool:
    return luhn_ok(value, 9) or (isinstance(value, str) and _FINESS_CORSE.fullmatch(value) is not None)


def nir_ok(value: str | None) -> bool:
    if not (isinstance(value, str) and _NIR.fullmatch(value)):
        return False
    body = value[:13].replace("2A", "19").replace("2B", "18")
    return 97 - int(body) % 97 == int(value[13:])


def rib_format_ok(etab, guichet, compte, cle) -> bool:
    return (
        isinstance(etab, str) and _ALNUM5.fullmatch(etab) is not None
        and isinstance(guichet, str) and _ALNUM5.fullmatch(guichet) is not None
        and isinstance(compte, str) and _ALNUM11.fullmatch(compte) is not None
        and isinstance(cle, str) and _KEY2.fullmatch(cle) is not None
    )  # fmt: skip


def rib_ok(etab, guichet, compte, cle) -> bool:
    if not rib_format_ok(etab, guichet, compte, cle):
        return False
    b, g, c = (int(x.upper().translate(_RIB_LETTERS)) for x in (etab, guichet, compte))
    return 97 - (89 * b + 15 * g + 3 * c) % 97 == int(cle)


def iban_ok(value: str | None) -> bool:
    """checks.iban_valid on one value: shape, the country's length and BBAN structure (the same
    schwifty registry, imported only when an IBAN is there), mod 97 == 1."""
    if not (isinstance(value, str) and _IBAN_SHAPE.fullmatch(value)):
        return False
    spec = _iban_country_spec(value[:2])
    if spec is None:
        return False
    length, regex = spec
    if len(value) != length or re.fullmatch(regex.pattern, value[4:]) is None:
        return False
    rearranged = value[4:] + value[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


_SPECS: dict[str, object] = {}


def _iban_country_spec(country: str):
    if country not in _SPECS:
        from schwifty import registry  # only when a file carries an IBAN (as checks._iban_spec)

        try:
            spec = registry.get_iban_spec(country)
            _SPECS[country] = (spec.iban_length, spec.regex)
        except Exception:  # schwifty raises different errors for unknown countries (as checks._iban_spec)
            _SPECS[country] = None
    return _SPECS[country]


def iban_rib_ok(value: str | None) -> bool:
    """The RIB key inside a French-format IBAN; True where not applicable."""
    if not (isinstance(value, str) and _FR_IBAN.fullmatch(value)):
        return True
    return rib_ok(value[4:9], value[9:14], value[14:25], value[25:27])


# --------------------------------------------------------------------------- prepare


def _blank(v):
    return None if isinstance(v, str) and not v.strip() else v


def _record(fields: tuple, params_domestic: frozenset) -> dict:
    """rules._prepare_records on one distinct tiers record."""
    out = {c: _blank(v) for c, v in zip(_FIELDS, fields, strict=True)}
    nat, ident = out["NatIdTiers"], out["IdTiers"]
    has_ident = ident is not None
    out["ok_siret"] = has_ident and nat == "01" and siret_ok(ident)
    out["ok_siren"] = has_ident and nat == "02" and siren_ok(ident)
    out["ok_finess"] = has_ident and nat == "03" and finess_ok(ident)
    out["ok_nir"] = has_ident and nat == "04" and nir_ok(ident)
    fmt = _ID_FORMATS.get(nat) if isinstance(nat, str) else None
    out["ok_idformat"] = True if fmt is None else (isinstance(ident, str) and fmt.fullmatch(ident) is not None)
    cat, jur = out["CatTiers"], out["NatJur"]
    out["CatNat"] = f"{cat}/{jur}" if cat is not None and jur is not None else None
    out["has_adresse"] = out["Adresse"] is not None
    out["has_cpte"] = out["CpteBancaire"] is not None
    ribs = [out[c] for c in _RIB_COLS]
    out["has_rib"] = any(v is not None for v in ribs)
    rib_complete = all(v is not None for v in ribs)
    iban = out["IBAN"]
    out["ok_cpte_complet"] = rib_complete or (iban is not None and not out["has_rib"])
    out["ok_rib_format"] = rib_complete and rib_format_ok(*ribs)
    out["ok_rib"] = out["ok_rib_format"] and rib_ok(*ribs)
    iban_up = iban.upper() if iban is not None else None
    out["ok_iban"] = iban_up is not None and iban_ok(iban_up)
    out["ok_iban_rib"] = not out["ok_iban"] or iban_rib_ok(iban_up)
    out["iban_etranger"] = iban is not None and iban_up[:2] not in params_domestic
    out["tiers_key"] = _tiers_key(out)
    out["key_is_id"] = out["tiers_key"].startswith("ID:")
    out["key_is_ref"] = out["tiers_key"].startswith("REF:")
    out["bank_sig"] = _bank_sig(out)
    out["nom_norm"] = out["Nom"].strip().upper() if out["Nom"] is not None else None
    return out


def _tiers_key(r: dict) -> str:
    """extract.tiers_keys on one record."""
    ident = r["IdTiers"].strip() if r["IdTiers"] is not None else None
    ref = r["RefTiers"].strip() if r["RefTiers"] is not None else None
    if ident is not None and ident != "":
        return "ID:" + (r["NatIdTiers"] or "") + ":" + ident
    if ref is not None and ref != "":
        return "REF:" + ref
    return "NOM:" + (r["Nom"] or "").strip().upper() + "|" + (r["CP"] or "")


def _bank_sig(r: dict) -> str | None:
    """extract.bank_signatures on one record."""
    iban = r["IBAN"].replace(" ", "").upper() if r["IBAN"] is not None else None
    if iban is not None and iban != "":
        return "IBAN " + iban
    rib = "".join(r[c] or "" for c in _RIB_COLS).upper()
    return "RIB " + rib if rib != "" else None


class Prepared:
    """Rows prepared as rules.prepare prepares the frame, without repeating the work per
    occurrence: `records` holds each distinct tiers record with its derived columns (every
    column a rule reads is a property of the record, the file-level consistency included),
    `inverse[i]` the record of occurrence i, `rows` the occurrences (their place in the file)."""

    def __init__(self, rows: list[list], records: list[dict], inverse: list[int]) -> None:
        self.rows = rows
        self.records = records
        self.inverse = inverse

    def __len__(self) -> int:
        return len(self.rows)

    def occurrence(self, i: int) -> dict:
        rec = dict(self.records[self.inverse[i]])
        row = self.rows[i]
        for c in ("flux", "bordereau", "exercice", "piece", "ligne", "position", "line"):
            rec[c] = row[_IDX[c]]
        return rec


def prepare_rows(rows: list[list], params: dict | None = None, rules: list[Rule] | None = None) -> Prepared:
    """rules.prepare on rows (extract.COLUMNS order). A record is a distinct tiers together with
    the occurrence columns the rules read (the flux, for the rules of recette debtors)."""
    params = params or load_params()
    rules = rules if rules is not None else build_rules(params)
    domestic = frozenset(str(c).upper() for c in params["iban_pays_domestiques"])
    start = _IDX[_FIELDS[0]]
    end = start + len(_FIELDS)
    assert COLUMNS[start:end] == _FIELDS  # noqa: S101 - layout of extract's rows
    context = [c for c in rule_columns(rules) if c in _CONTEXT]
    ctx_idx = [_IDX[c] for c in context]
    index: dict[tuple, int] = {}
    records: list[dict] = []
    inverse: list[int] = []
    for row in rows:
        key = tuple(row[start:end]) + tuple(row[i] for i in ctx_idx)
        k = index.get(key)
        if k is None:
            k = index[key] = len(records)
            rec = _record(key[: end - start], domestic)
            rec.update(zip(context, key[end - start:], strict=True))
            records.append(rec)
        inverse.append(k)
    # consistency across the file: how many distinct bank accounts / names one tiers carries
    # (the same sets over distinct records as over occurrences)
    banks: dict[str, set] = {}
    names: dict[str, set] = {}
    for r in records:
        if (r["key_is_id"] or r["key_is_ref"]) and r["bank_sig"] is not None:
            banks.setdefault(r["tiers_key"], set()).add(r["bank_sig"])
        if r["key_is_id"] and r["nom_norm"] is not None:
            names.setdefault(r["tiers_key"], set()).add(r["nom_norm"])
    for r in records:
        r["ok_coherence_banque"] = r["bank_sig"] is None or len(banks.get(r["tiers_key"], ())) <= 1
        r["ok_coherence_nom"] = r["nom_norm"] is None or len(names.get(r["tiers_key"], ())) <= 1
    return Prepared(rows, records, inverse)


# --------------------------------------------------------------------------- failures and findings


def failures_rows(prepared: Prepared, rules: list[Rule]) -> list[tuple[int, str]]:
    """(row, rule code) of every violation, in rule order then row order (as failures_plain).
    Each rule is evaluated once per distinct record, then spread over its occurrences."""
    out: list[tuple[int, str]] = []
    for rule in rules:
        bad = {k for k, rec in enumerate(prepared.records) if rule.fails(rec)}
        if bad:
            out.extend((i, rule.code) for i, k in enumerate(prepared.inverse) if k in bad)
    return out


def place_label(r: dict) -> str:
    """extract.place_labels on one occurrence."""
    label = "bordereau " + str("?" if r["bordereau"] is None else r["bordereau"])
    if r["exercice"] is not None:
        label += " (" + str(r["exercice"]) + ")"
    label += " / pièce " + str("?" if r["piece"] is None else r["piece"])
    label += " / ligne " + str("?" if r["ligne"] is None else r["ligne"])
    return label if int(r["position"]) <= 1 else label + " / tiers " + str(int(r["position"]))


def build_findings(prepared: Prepared, failures: list[tuple[int, str]], rules: list[Rule]) -> tuple[list[Finding], list[dict]]:
    """gate.build_findings for the row-wise engine: French Findings plus the detail lines of the
    HTML page (a list of dicts; QualityResult.to_html turns them into its frame)."""
    by_code = {r.code: r for r in rules}
    order = {r.code: i for i, r in enumerate(rules)}
    findings: list[Finding] = []
    details: list[dict] = []
    for row, code in sorted(failures, key=lambda f: (f[0], order[f[1]])):
        r = by_code[code]
        rec = prepared.occurrence(row)
        value = rec[r.shown]
        sev = "error" if r.severity == "blocking" else "warning"
        place = place_label(rec)
        f = Finding(rule=code, message=r.message, fix=r.fix, place=place,
                    value="" if value is None else str(value), severity=sev, layer="qualite",
                    line=int(rec["line"]) if rec["line"] is not None else None)
        findings.append(f)
        details.append({"row": row, "rule": code, "tiers_key": rec["tiers_key"], "Nom": rec["Nom"],
                        "IdTiers": rec["IdTiers"], "NatIdTiers": rec["NatIdTiers"], "RefTiers": rec["RefTiers"],
                        "place": place, "value": f.value, "severity": sev, "bordereau": rec["bordereau"]})
    return findings, details
