"""The tiers quality gate: check every tiers of a PES_Aller against the rules Hélios enforces,
before the file leaves.

- `extract.extract_tiers(path)`: streaming extraction, one DataFrame row per tiers occurrence.
- `rules`: the rules as data (`build_rules`), `prepare` (checksums and derived columns);
  editable tables in `schemas/quality/` (CatTiers/NatJur pairs, parameters).
- `gate.run_tiers_gate(path) -> QualityResult` (Great Expectations engine; `.ok`, `.findings`,
  `.summary`, `.to_json()`, `.to_html()`); `gate.check_frame(df, engine="ge"|"plain")`.
- `plain.check_tiers_plain(df)`: the same rules in plain pandas (speed floor, cross-check).
- `rowwise`: the same rules record by record in plain Python (no numpy/pandas import), the engine
  of `gate.check_rows(rows, engine="auto"|"rows")`; `run_tiers_gate(path, rows=...)` takes the rows
  the validator's single pass collected (`flows.helios.validate.validate_pes_with_tiers`).
"""
