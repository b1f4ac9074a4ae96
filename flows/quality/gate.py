"""The tiers quality gate: every tiers of a PES_Aller checked before it leaves for Hélios.

Hélios rejects a whole bordereau (sometimes the whole file) for one bad SIRET, RIB key or postal
code, and the agent then learns it days later from a cryptic acquit. The gate runs the same checks
up front and says, in French, which tiers to correct and how.

Engine: one Great Expectations 1.x validation run over the tiers frame (ephemeral context, pandas
data source, one expectation per rule, row conditions for conditional rules). GE is imported lazily
(it costs seconds to import) with analytics and progress bars off; it neither writes files nor calls
the network. `engine="plain"` runs the same rules in plain pandas (flows.quality.plain).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.findings import Finding, Report
from flows.quality.extract import COLUMNS, frame_from_rows, place_labels
from flows.quality.rules import Cond, Rule, build_rules, prepare, validation_frame

if TYPE_CHECKING:
    import pandas as pd

# numpy and pandas are imported where a frame is checked: a small file goes through the
# row-wise engine (flows.quality.rowwise) and never imports them (about 0.4 s saved per call).

_GX: dict[str, Any] = {}


# --------------------------------------------------------------------------- result


@dataclass
class QualityResult(Report):
    """Outcome of the tiers gate on one file: a Report (same JSON and text) plus the detail frame."""

    kind: str = "pes_tiers"
    # one line per finding with the tiers it concerns (for grouping in the HTML page); not serialised.
    # A DataFrame (pandas engines) or a list of dicts (row-wise engine, turned into a frame on demand)
    details: pd.DataFrame | list | None = field(default=None, repr=False)

    def to_report(self) -> Report:
        """The same findings as a plain Report, without the detail frame."""
        return Report(file=self.file, kind=self.kind, findings=list(self.findings), summary=dict(self.summary))

    def to_html(self, *, max_tiers: int = 2000, max_places: int = 20) -> str:
        from flows.quality.html import render_html

        if isinstance(self.details, list) and self.details:  # a clean file's page needs no pandas
            import pandas as pd

            columns = ["row", "rule", "tiers_key", "Nom", "IdTiers", "NatIdTiers", "RefTiers", "place", "value", "severity"]
            self.details = pd.DataFrame(self.details, columns=columns + ["bordereau"])[columns]
        return render_html(self, max_tiers=max_tiers, max_places=max_places)


# --------------------------------------------------------------------------- GE engine


def _condition(conds: tuple[Cond, ...]):
    from great_expectations.expectations.row_conditions import Column

    parts = []
    for c in conds:
        col = Column(c.column)
        if c.op == "==":
            parts.append(col == c.value)
        elif c.op == "!=":
            parts.append(col != c.value)
        elif c.op == "in":
            parts.append(col.is_in(list(c.value)))
        elif c.op == "not in":
            parts.append(col.is_not_in(list(c.value)))
        elif c.op == "notnull":
            parts.append(col.is_not_null())
        elif c.op == "isnull":
            parts.append(col.is_null())
        else:
            raise ValueError(c.op)
    if not parts:
        return None
    cond = parts[0]
    for p in parts[1:]:
        cond = cond & p
    return cond


def _expectation(rule: Rule):
    import great_expectations.expectations as gxe

    kw: dict[str, Any] = {"column": rule.column, "meta": {"rule": rule.code}}
    cond = _condition(rule.when)
    if cond is not None:
        kw["row_condition"] = cond
    if rule.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(**kw)
    if rule.kind == "null":
        return gxe.ExpectColumnValuesToBeNull(**kw)
    if rule.kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(regex=rule.param, **kw)
    if rule.kind == "not_regex":
        return gxe.ExpectColumnValuesToNotMatchRegex(regex=rule.param, **kw)
    if rule.kind == "max_len":
        return gxe.ExpectColumnValueLengthsToBeBetween(max_value=rule.param, **kw)
    if rule.kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(value_set=list(rule.param), **kw)
    if rule.kind == "not_in_set":
        return gxe.ExpectColumnValuesToNotBeInSet(value_set=list(rule.param), **kw)
    if rule.kind == "true":
        return gxe.ExpectColumnValuesToBeInSet(value_set=[True], **kw)
    raise ValueError(rule.kind)


def _gx():
    """The lazily created GE ephemeral context and pandas batch definition (one per process)."""
    if "batch_definition" in _GX:
        return _GX
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    except Exception:  # noqa: S110 - cosmetic only (progress bars on stderr)
        pass
    source = context.data_sources.add_pandas("demat_tiers")
    asset = source.add_dataframe_asset("tiers")
    _GX.update(gx=gx, context=context, batch_definition=asset.add_batch_definition_whole_dataframe("fichier"))
    return _GX


def build_suite(rules: list[Rule]):
    """The GE ExpectationSuite expressing every rule (one expectation each)."""
    gx = _gx()["gx"]
    suite = gx.ExpectationSuite(name="demat_tiers_helios")
    for rule in rules:
        suite.add_expectation(_expectation(rule))
    return suite


def failures_ge(prepared: pd.DataFrame, rules: list[Rule], suite=None, *, framed: bool = False) -> pd.DataFrame:
    """(row, rule) of every violation, computed by one GE validation run over the frame
    (`framed=True` when `prepared` is already a validation_frame)."""
    import numpy as np
    import pandas as pd

    empty = pd.DataFrame({"row": pd.Series([], dtype="int64"), "rule": pd.Series([], dtype=object)})
    if len(prepared) == 0 or not rules:
        return empty
    g = _gx()
    suite = suite if suite is not None else build_suite(rules)
    frame = prepared if framed else validation_frame(prepared, rules)
    batch = g["batch_definition"].get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    parts = []
    for res in result.results:
        code = (res.expectation_config.meta or {}).get("rule")
        info = res.exception_info or {}
        raised = info.get("raised_exception") if isinstance(info, dict) else False
        if raised or code is None:
            raise RuntimeError(f"Great Expectations n'a pas pu évaluer la règle {code} : {info}")
        if res.success:
            continue
        rows = res.result.get("unexpected_index_list") or []
        if rows and isinstance(rows[0], dict):  # when unexpected_index_column_names is configured
            rows = [r.get("row") for r in rows]
        if rows:
            parts.append(pd.DataFrame({"row": np.asarray(rows), "rule": code}))
    if not parts:
        return empty
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- findings


def build_findings(prepared: pd.DataFrame, failures: pd.DataFrame, rules: list[Rule]) -> tuple[list[Finding], pd.DataFrame]:
    """Turn (row, rule) pairs into French Findings plus a detail frame for the HTML page."""
    import numpy as np
    import pandas as pd

    by_code = {r.code: r for r in rules}
    order = {r.code: i for i, r in enumerate(rules)}
    if len(failures) == 0:
        return [], pd.DataFrame(columns=["row", "rule", "tiers_key", "Nom", "IdTiers", "place", "value", "severity"])
    f = failures.copy()
    f["_o"] = f["rule"].map(order)
    f = f.sort_values(["row", "_o"], kind="stable").drop(columns="_o").reset_index(drop=True)
    rows = f["row"].to_numpy()
    sub = prepared.loc[rows]
    places = place_labels(sub).to_numpy()
    values = np.empty(len(f), dtype=object)
    for code, idx in f.groupby("rule", sort=False).indices.items():
        col = by_code[code].shown
        values[idx] = prepared.loc[rows[idx], col].to_numpy()
    lines = sub["line"].to_numpy()
    findings = []
    severities = []
    for code, place, value, line in zip(f["rule"].to_numpy(), places, values, lines, strict=True):
        r = by_code[code]
        sev = "error" if r.severity == "blocking" else "warning"
        severities.append(sev)
        findings.append(
            Finding(
                rule=code,
                message=r.message,
                fix=r.fix,
                place=place,
                value="" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value),
                severity=sev,
                layer="qualite",
                line=int(line) if line is not None and not pd.isna(line) else None,
            )
        )
    details = pd.DataFrame(
        {
            "row": rows,
            "rule": f["rule"].to_numpy(),
            "tiers_key": sub["tiers_key"].to_numpy(),
            "Nom": sub["Nom"].to_numpy(),
            "IdTiers": sub["IdTiers"].to_numpy(),
            "NatIdTiers": sub["NatIdTiers"].to_numpy(),
            "RefTiers": sub["RefTiers"].to_numpy(),
            "place": places,
            "value": [fd.value for fd in findings],
            "severity": severities,
        }
    )
    return findings, details


ENGINES = ("ge", "plain", "rows", "auto")


def check_frame(df: pd.DataFrame, *, file: str = "", engine: str = "ge", rules: list[Rule] | None = None) -> QualityResult:
    """Validate an extracted tiers frame (see extract_tiers) and build the result.

    engine "ge": Great Expectations; "plain": the same rules in pandas; "rows": the same rules
    record by record in plain Python (flows.quality.rowwise); "auto": pandas first, and Great
    Expectations only when pandas finds something (the engines agree: tests/unit/quality), which
    spares a clean file the seconds GE costs to import and run in a fresh task process.
    """
    if engine not in ENGINES:
        raise ValueError(f"moteur inconnu : {engine}")
    if engine == "rows":
        rows = df[COLUMNS].astype(object).where(df[COLUMNS].notna(), None).to_numpy().tolist()
        return check_rows(rows, file=file, engine="rows", rules=rules)
    from flows.quality.plain import failures_plain

    rules = rules if rules is not None else build_rules()
    t0 = time.perf_counter()
    prepared = prepare(df)
    t1 = time.perf_counter()
    used = engine
    if engine == "ge":
        failures = failures_ge(prepared, rules)
    else:
        failures = failures_plain(prepared, rules)
        if engine == "auto":  # GE only where it has something to say: it states every refusal
            used = "ge" if len(failures) else "plain"
            if used == "ge":
                failures = failures_ge(prepared, rules)
    t2 = time.perf_counter()
    findings, details = build_findings(prepared, failures, rules)
    t3 = time.perf_counter()
    blocking = details[details["severity"] == "error"] if len(details) else details
    by_rule = failures["rule"].value_counts().to_dict() if len(failures) else {}
    summary = {
        "moteur": "great_expectations" if used == "ge" else "pandas",
        "tiers_occurrences": int(len(df)),
        "tiers_distincts": int(prepared["tiers_key"].nunique()) if len(prepared) else 0,
        "erreurs_bloquantes": int(sum(1 for f in findings if f.severity == "error")),
        "avertissements": int(sum(1 for f in findings if f.severity == "warning")),
        "tiers_a_corriger": int(blocking["tiers_key"].nunique()) if len(blocking) else 0,
        "bordereaux_touches": sorted({str(b) for b in prepared.loc[blocking["row"], "bordereau"].dropna()})
        if len(blocking)
        else [],
        "par_regle": {str(k): int(v) for k, v in sorted(by_rule.items())},
        "regles": len(rules),
        "durees_s": {"preparation": round(t1 - t0, 4), "validation": round(t2 - t1, 4), "constats": round(t3 - t2, 4)},
    }
    return QualityResult(file=file, findings=findings, summary=summary, details=details)


def check_rows(rows: list[list], *, file: str = "", engine: str = "auto", rules: list[Rule] | None = None) -> QualityResult:
    """Validate tiers rows (extract.COLUMNS order). "auto": the row-wise engine for small sets
    (no pandas import), and, as check_frame's "auto", Great Expectations states a refusal;
    the pandas engine for large sets. "rows": the row-wise engine whatever the size."""
    from flows.quality import rowwise

    if engine not in ENGINES:
        raise ValueError(f"moteur inconnu : {engine}")
    if engine in ("ge", "plain") or (engine == "auto" and len(rows) > rowwise.MAX_ROWS):
        return check_frame(frame_from_rows(rows), file=file, engine=engine, rules=rules)
    rules = rules if rules is not None else build_rules()
    t0 = time.perf_counter()
    prepared = rowwise.prepare_rows(rows, rules=rules)
    t1 = time.perf_counter()
    failures = rowwise.failures_rows(prepared, rules)
    t2 = time.perf_counter()
    if failures and engine == "auto":  # a refusal is stated by Great Expectations, as in the pipeline
        return check_frame(frame_from_rows(rows), file=file, engine="ge", rules=rules)
    findings, details = rowwise.build_findings(prepared, failures, rules)
    t3 = time.perf_counter()
    blocking = [d for d in details if d["severity"] == "error"]
    by_rule: dict[str, int] = {}
    for _row, code in failures:
        by_rule[code] = by_rule.get(code, 0) + 1
    summary = {
        "moteur": "python",
        "tiers_occurrences": len(rows),
        "tiers_distincts": len({r["tiers_key"] for r in prepared.records}),
        "erreurs_bloquantes": sum(1 for f in findings if f.severity == "error"),
        "avertissements": sum(1 for f in findings if f.severity == "warning"),
        "tiers_a_corriger": len({d["tiers_key"] for d in blocking}),
        "bordereaux_touches": sorted({str(d["bordereau"]) for d in blocking if d["bordereau"] is not None}),
        "par_regle": dict(sorted(by_rule.items())),
        "regles": len(rules),
        "durees_s": {"preparation": round(t1 - t0, 4), "validation": round(t2 - t1, 4), "constats": round(t3 - t2, 4)},
    }
    return QualityResult(file=file, findings=findings, summary=summary, details=details)


def run_tiers_gate(path: str | Path, *, engine: str = "ge", rows: list[list] | None = None) -> QualityResult:
    """Extract every tiers of a PES_Aller (streaming) and check it against the Hélios rules.
    ``rows``: the tiers rows already collected by the validation's pass
    (flows.helios.validate.validate_pes_with_tiers), so the file is not read a second time.
    Raises flows.findings.UnreadableFile when the file cannot be read as a PES_Aller."""
    from flows.quality.extract import iter_tiers_rows

    t0 = time.perf_counter()
    if rows is None:
        rows = list(iter_tiers_rows(path))
    t1 = time.perf_counter()
    result = check_rows(rows, file=str(path), engine=engine)
    result.summary["durees_s"]["extraction"] = round(t1 - t0, 4)
    return result
