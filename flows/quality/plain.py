"""The tiers rules in plain vectorised pandas: the speed floor of the gate and a cross-check of the
Great Expectations engine (both must flag exactly the same occurrences)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flows.quality.rules import Rule, build_rules, prepare, validation_frame

FAILURE_COLUMNS = ["row", "rule"]


def failures_plain(prepared: pd.DataFrame, rules: list[Rule], *, framed: bool = False) -> pd.DataFrame:
    """(row, rule) of every violation, rows being index labels of `prepared`
    (`framed=True` when `prepared` is already a validation_frame)."""
    prepared = prepared if framed else validation_frame(prepared, rules)
    parts = []
    for rule in rules:
        bad = rule.failing(prepared).to_numpy()
        if bad.any():
            rows = prepared.index.to_numpy()[bad]
            parts.append(pd.DataFrame({"row": rows, "rule": np.full(len(rows), rule.code, dtype=object)}))
    if not parts:
        return pd.DataFrame({"row": pd.Series([], dtype="int64"), "rule": pd.Series([], dtype=object)})
    return pd.concat(parts, ignore_index=True)


def check_tiers_plain(df: pd.DataFrame, *, rules: list[Rule] | None = None) -> pd.DataFrame:
    """Failures of an extracted tiers frame: row, rule, severity, column, value (one line per
    faulty occurrence and rule)."""
    rules = rules if rules is not None else build_rules()
    prepared = prepare(df)
    failures = failures_plain(prepared, rules)
    return describe_failures(prepared, failures, rules)


def describe_failures(prepared: pd.DataFrame, failures: pd.DataFrame, rules: list[Rule]) -> pd.DataFrame:
    """Add severity, shown column and value to (row, rule) pairs."""
    by_code = {r.code: r for r in rules}
    out = failures.copy()
    out["severity"] = out["rule"].map(lambda c: by_code[c].severity)
    out["column"] = out["rule"].map(lambda c: by_code[c].shown)
    values = []
    for code, grp in out.groupby("rule", sort=False):
        col = by_code[code].shown
        values.append(prepared.loc[grp["row"].to_numpy(), col].set_axis(grp.index))
    out["value"] = pd.concat(values) if values else pd.Series([], dtype=object)
    return out.sort_values(["row", "rule"], kind="stable").reset_index(drop=True)
