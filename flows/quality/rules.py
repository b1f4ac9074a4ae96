"""The tiers rules Hélios enforces, declared once as data and run by two engines.

Each Rule is "column X must satisfy K (when conditions C hold)". The Great Expectations engine
(flows.quality.gate) turns every rule into one expectation with a row condition; the plain pandas
engine (flows.quality.plain) turns it into a boolean mask. Checks that are not column-local (keys,
cross-field completeness, consistency across the file) are computed once by `prepare()` as boolean
columns `ok_*`, which both engines then check with the same rule.

Sources: FACTS.md §2 "Tiers rules that make Hélios reject a bordereau" and the annotations of the
official XSD PES v5.30 (Class_TiersDepense, Class_TiersRecette, Class_Adresse, Class_Bancaire).
Editable data: schemas/quality/catjur_pairs.csv (CatTiers/NatJur pairs) and schemas/quality/rules.yaml.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from flows.quality.extract import BLOCK_COLUMNS, TIERS_FIELDS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# numpy / pandas are imported inside the functions that use them: the row-wise engine
# (flows.quality.rowwise) reads the same declarations without paying pandas' import.

DATA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "quality"

Severity = Literal["blocking", "warning"]
Kind = Literal["not_null", "null", "regex", "not_regex", "max_len", "in_set", "not_in_set", "true"]

CAT_TIERS = ["01"] + [str(i) for i in range(20, 30)] + ["50"] + [str(i) for i in range(60, 66)]
CAT_TIERS += [str(i) for i in range(70, 75)]
NAT_JUR = [f"{i:02d}" for i in range(1, 12)]
NAT_ID_TIERS = [f"{i:02d}" for i in range(1, 13)]
BIC_RE = r"[A-Z]{6}[A-Z2-9][A-NP-Z0-9](?:[A-Z0-9]{3})?"


@dataclass(frozen=True)
class Cond:
    """One conjunct of a rule's applicability: column <op> value (ops: ==, !=, in, not in,
    notnull, isnull). Conditions of a rule are AND-ed."""

    column: str
    op: str
    value: Any = None

    def mask(self, df: pd.DataFrame) -> pd.Series:
        s = df[self.column]
        if self.op == "==":
            return (s == self.value).fillna(False).astype(bool)
        if self.op == "!=":
            return (s != self.value).astype(bool)
        if self.op == "in":
            return s.isin(list(self.value))
        if self.op == "not in":
            return ~s.isin(list(self.value))
        if self.op == "notnull":
            return s.notna()
        if self.op == "isnull":
            return s.isna()
        raise ValueError(f"opérateur inconnu {self.op}")

    def holds(self, rec: dict) -> bool:
        """The same condition on one prepared record (the row-wise engine; None is missing)."""
        v = rec[self.column]
        if self.op == "==":
            return v is not None and v == self.value
        if self.op == "!=":
            return v is None or v != self.value
        if self.op == "in":
            return v is not None and v in self.value
        if self.op == "not in":
            return v is None or v not in self.value
        if self.op == "notnull":
            return v is not None
        if self.op == "isnull":
            return v is None
        raise ValueError(f"opérateur inconnu {self.op}")


@dataclass(frozen=True)
class Rule:
    code: str
    severity: Severity
    column: str  # the column the expectation runs on
    kind: Kind
    message: str  # French: what is wrong
    fix: str  # French: how to correct it
    param: Any = None  # regex, max length or value set
    when: tuple[Cond, ...] = ()
    value_column: str | None = None  # column whose value is shown to the agent (default: column)
    family: str = "identification"

    @property
    def shown(self) -> str:
        return self.value_column or self.column

    def failing(self, df: pd.DataFrame) -> pd.Series:
        """Boolean mask of the occurrences violating the rule (the plain-pandas semantics, which
        mirror GE's: map expectations other than not_null/null ignore missing values)."""
        import numpy as np
        import pandas as pd

        s = df[self.column]
        present = s.notna().to_numpy()
        if self.kind == "not_null":
            bad = ~present
        elif self.kind == "null":
            bad = present
        elif self.kind == "regex":
            bad = present & ~_text_op(s, lambda v: v.str.contains(self.param, regex=True, na=False))
        elif self.kind == "not_regex":
            bad = present & _text_op(s, lambda v: v.str.contains(self.param, regex=True, na=False))
        elif self.kind == "max_len":
            bad = present & _text_op(s, lambda v: v.str.len() > self.param)
        elif self.kind == "in_set":
            bad = present & ~s.isin(list(self.param)).to_numpy()
        elif self.kind == "not_in_set":
            bad = present & s.isin(list(self.param)).to_numpy()
        elif self.kind == "true":
            bad = present & (s != True).to_numpy()  # noqa: E712  (object/bool column: compare to the literal)
        else:  # pragma: no cover - guarded by Kind
            raise ValueError(self.kind)
        bad = np.array(bad, dtype=bool)  # own, writable copy
        for cond in self.when:
            bad &= cond.mask(df).to_numpy(dtype=bool)
        return pd.Series(bad, index=df.index)


    def fails(self, rec: dict) -> bool:
        """Whether one prepared record violates the rule: `failing`'s semantics on a single
        record, for the row-wise engine (flows.quality.rowwise; equality proven by
        tests/unit/quality/test_rowwise.py)."""
        for cond in self.when:
            if not cond.holds(rec):
                return False
        v = rec[self.column]
        kind = self.kind
        if kind == "not_null":
            return v is None
        if v is None:  # the other kinds ignore missing values (GE's map expectations)
            return False
        if kind == "null":
            return True
        if kind == "regex":
            return _search(self.param, str(v)) is None
        if kind == "not_regex":
            return _search(self.param, str(v)) is not None
        if kind == "max_len":
            return len(str(v)) > self.param
        if kind == "in_set":
            return v not in self.param
        if kind == "not_in_set":
            return v in self.param
        if kind == "true":
            return v != True  # noqa: E712  (as failing: a flag column compared to the literal)
        raise ValueError(kind)  # pragma: no cover - guarded by Kind


@lru_cache(maxsize=256)
def _compiled(pattern: str):
    import re

    return re.compile(pattern)


def _search(pattern: str, text: str):
    """pandas' str.contains(regex=True) is re.search with no flags."""
    return _compiled(pattern).search(text)


def _text_op(s: pd.Series, fn) -> np.ndarray:
    """A string predicate over a column, evaluated once per category for Categorical columns."""
    import numpy as np
    import pandas as pd

    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = pd.Series(s.cat.categories.astype(object), dtype=object)
        res = fn(cats.astype(str)).fillna(False).to_numpy(dtype=bool)
        codes = s.cat.codes.to_numpy()
        out = np.zeros(len(s), dtype=bool)
        ok = codes >= 0
        out[ok] = res[codes[ok]]
        return out
    return fn(s.astype(object).astype(str)).fillna(False).to_numpy(dtype=bool)


def rule_columns(rules: list[Rule]) -> list[str]:
    """Every column a rule reads (checked column and condition columns)."""
    cols: dict[str, None] = {}
    for r in rules:
        cols[r.column] = None
        for c in r.when:
            cols[c.column] = None
    return list(cols)


def validation_frame(prepared: pd.DataFrame, rules: list[Rule]) -> pd.DataFrame:
    """The frame both engines check, shaped for speed without changing what is checked: only the
    columns the rules read (GE's row conditions are DataFrame.query calls that rebuild a resolver
    per column and copy the filtered rows) and text columns as pandas Categorical (filtered copies
    move small integer codes; string predicates run once per distinct value)."""
    frame = prepared[rule_columns(rules)]
    return frame.astype({c: "category" for c in frame.columns if frame[c].dtype == object})


# --------------------------------------------------------------------------- editable data


@lru_cache(maxsize=4)
def load_params(data_dir: Path = DATA_DIR) -> dict:
    params = yaml.safe_load((data_dir / "rules.yaml").read_text(encoding="utf-8")) or {}
    params.setdefault("iban_pays_domestiques", ["FR", "MC"])
    params.setdefault("civilites_obsoletes", [])
    params["severites"] = params.get("severites") or {}
    return params


@lru_cache(maxsize=4)
def load_catjur_pairs(data_dir: Path = DATA_DIR) -> frozenset[str]:
    """Allowed pairs as "CatTiers/NatJur" strings."""
    with (data_dir / "catjur_pairs.csv").open(encoding="utf-8", newline="") as fh:
        return frozenset(
            f"{row['CatTiers'].strip()}/{row['NatJur'].strip()}"
            for row in csv.DictReader(fh)
            if row.get("CatTiers") and row.get("NatJur")
        )


# --------------------------------------------------------------------------- derived columns


def _obj(s: pd.Series) -> pd.Series:
    s = s.astype(object)
    return s.where(s.notna(), None)


def _blank_to_none(s: pd.Series) -> pd.Series:
    """Whitespace-only values become None (tested once per distinct value)."""
    import numpy as np
    import pandas as pd

    s = _obj(s)
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    blank_u = np.fromiter((isinstance(v, str) and not v.strip() for v in uniques), dtype=bool, count=len(uniques))
    if not blank_u.any():
        return s
    blank = np.zeros(len(s), dtype=bool)
    has = codes >= 0
    blank[has] = blank_u[codes[has]]
    return s.where(~blank, None)


ID_FORMATS = {  # NatIdTiers -> the form of IdTiers (full match), for the types Hélios does not key-check
    "05": r"[A-Za-z0-9]{4,18}",  # TVA intracommunautaire
    "06": r".{1,18}",  # hors UE
    "07": r"[A-Za-z0-9]{9}",  # TAHITI
    "08": r"[0-9]{9,10}",  # RIDET
    "09": r".{1,80}",  # en cours d'immatriculation
    "10": r"FRWF.{0,14}",  # FRWF
    "11": r"[0-9]{5}.{0,75}",  # IREP
    "12": r"[0-9]{13}",  # NFP
}


def _id_format_valid(nat: pd.Series, ident: pd.Series) -> pd.Series:
    """Lengths of the identifiers Hélios does not key-check (XSD annotation of IdTiers)."""
    import pandas as pd

    out = pd.Series(True, index=ident.index)
    for code, pattern in ID_FORMATS.items():
        sel = nat == code
        if sel.any():
            out[sel] = ident[sel].str.fullmatch(pattern, na=False).astype(bool).to_numpy()
    return out


def unique_rows(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(inverse, first): `first` holds the position of the first occurrence of each distinct row
    of `frame`, `inverse` maps every row to its distinct row. Missing values compare equal."""
    import numpy as np
    import pandas as pd

    n = len(frame)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    key = np.zeros(n, dtype=np.int64)
    span = 1  # number of possible key values so far (mixed-radix code of the columns seen)
    for col in frame.columns:
        codes, uniques = pd.factorize(frame[col], use_na_sentinel=True)
        card = len(uniques) + 1
        if span * card >= 2**62:  # compress before the mixed-radix key could overflow
            key = pd.factorize(key)[0].astype(np.int64)
            span = int(key.max()) + 1
        key = key * card + (codes.astype(np.int64) + 1)
        span *= card
    key = pd.factorize(key)[0].astype(np.int64)
    k = int(key.max()) + 1
    first = np.full(k, n, dtype=np.int64)
    np.minimum.at(first, key, np.arange(n, dtype=np.int64))
    return key, first


def _on_subset(fn, where: pd.Series, *series: pd.Series) -> pd.Series:
    """fn (a vectorised check) evaluated only on the rows where it applies; False elsewhere."""
    import pandas as pd

    out = pd.Series(False, index=where.index)
    sel = where.to_numpy(dtype=bool)
    if sel.any():
        out[sel] = fn(*(s[sel] for s in series)).to_numpy(dtype=bool)
    return out


def _prepare_records(rec: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Field-level normalisation and checks of distinct tiers records (no file context)."""
    import pandas as pd

    from flows.quality import checks
    from flows.quality.extract import bank_signatures, tiers_keys

    out = pd.DataFrame({c: _blank_to_none(rec[c]) for c in rec.columns}, index=rec.index)
    nat, ident = out["NatIdTiers"], out["IdTiers"]
    has_ident = ident.notna()
    for col, code, fn in (
        ("ok_siret", "01", checks.siret_valid),
        ("ok_siren", "02", checks.siren_valid),
        ("ok_finess", "03", checks.finess_valid),
        ("ok_nir", "04", checks.nir_valid),
    ):
        out[col] = _on_subset(fn, has_ident & (nat == code), ident)
    out["ok_idformat"] = _id_format_valid(nat, ident)

    both = out["CatTiers"].notna() & out["NatJur"].notna()
    out["CatNat"] = (out["CatTiers"].fillna("") + "/" + out["NatJur"].fillna("")).where(both, None)

    out["has_adresse"] = out["Adresse"].notna()
    out["has_cpte"] = out["CpteBancaire"].notna()
    rib_cols = ["CodeEtab", "CodeGuic", "IdCpte", "CleRib"]
    out["has_rib"] = out[rib_cols].notna().any(axis=1)
    rib_complete = out[rib_cols].notna().all(axis=1)
    out["ok_cpte_complet"] = rib_complete | (out["IBAN"].notna() & ~out["has_rib"])
    ribs = [out[c] for c in rib_cols]
    out["ok_rib_format"] = _on_subset(checks.rib_format_valid, rib_complete, *ribs)
    out["ok_rib"] = _on_subset(checks.rib_valid, out["ok_rib_format"], *ribs)
    iban_up = out["IBAN"].str.upper()
    out["ok_iban"] = _on_subset(checks.iban_valid, iban_up.notna(), iban_up)
    out["ok_iban_rib"] = ~out["ok_iban"] | _on_subset(checks.iban_rib_valid, out["ok_iban"], iban_up)
    domestic = [str(c).upper() for c in params["iban_pays_domestiques"]]
    out["iban_etranger"] = out["IBAN"].notna() & ~iban_up.str[:2].isin(domestic)
    out["tiers_key"] = tiers_keys(out)
    out["key_is_id"] = out["tiers_key"].str.startswith("ID:")
    out["key_is_ref"] = out["tiers_key"].str.startswith("REF:")
    out["bank_sig"] = bank_signatures(out)
    out["nom_norm"] = out["Nom"].str.strip().str.upper()
    return out


def prepare(df: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
    """The frame both engines validate: tiers fields with blank values as absent (Hélios treats
    an empty V like a missing element) plus the derived `ok_*` / helper columns.

    A file repeats the same tiers on many lignes, so the field-level work runs once per distinct
    tiers record and is broadcast back; only the file-level consistency runs on every occurrence.
    """
    import numpy as np
    import pandas as pd

    params = params or load_params()
    fields = [c for c in TIERS_FIELDS + BLOCK_COLUMNS if c in df.columns]
    missing = [c for c in TIERS_FIELDS + BLOCK_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"colonnes absentes du tableau des tiers : {missing}")
    inverse, first = unique_rows(df[fields])
    records = _prepare_records(df[fields].iloc[first].reset_index(drop=True), params)
    # Broadcast back to every occurrence. Text columns come out as pandas Categorical built from
    # the per-record codes (no per-occurrence hashing); flags as plain numpy bools.
    cols: dict[str, object] = {}
    codes_of: dict[str, np.ndarray] = {}
    for col in records.columns:
        values = records[col]
        if values.dtype == bool:
            cols[col] = values.to_numpy()[inverse]
            continue
        codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
        occ = codes[inverse]
        codes_of[col] = occ
        cols[col] = pd.Categorical.from_codes(occ, categories=pd.Index(uniques, dtype=object))
    out = pd.DataFrame(cols, index=df.index)
    for col in ("flux", "bordereau", "exercice", "piece", "ligne"):
        out[col] = _obj(df[col])
    out["position"] = df["position"].to_numpy()
    out["line"] = df["line"].to_numpy()

    # consistency across the file, on every occurrence (integer codes: no string hashing)
    key = codes_of["tiers_key"]
    n_keys = int(key.max()) + 1 if len(key) else 0
    has_id = out["key_is_id"].to_numpy() | out["key_is_ref"].to_numpy()
    out["ok_coherence_banque"] = _distinct_per_key(np.where(has_id, key, -1), codes_of["bank_sig"], n_keys) <= 1
    out["ok_coherence_nom"] = _distinct_per_key(np.where(out["key_is_id"].to_numpy(), key, -1), codes_of["nom_norm"], n_keys) <= 1
    return out


def _distinct_per_key(key: np.ndarray, value: np.ndarray, n_keys: int) -> np.ndarray:
    """For each occurrence, how many distinct non-missing values its key carries in the file
    (0 where the key or the value is missing: nothing to compare)."""
    import numpy as np

    out = np.zeros(len(key), dtype=np.int64)
    ok = (key >= 0) & (value >= 0)
    if not ok.any():
        return out
    width = int(value.max()) + 1
    pairs = np.unique(key[ok].astype(np.int64) * width + value[ok])
    counts = np.bincount(pairs // width, minlength=n_keys)
    out[ok] = counts[key[ok]]
    return out


# --------------------------------------------------------------------------- the rules


def build_rules(params: dict | None = None, pairs: frozenset[str] | None = None) -> list[Rule]:
    params = params or load_params()
    pairs = pairs if pairs is not None else load_catjur_pairs()
    B, W = "blocking", "warning"
    nn = Cond
    rules = [
        # ---- identification
        Rule("TIERS-NATIDTIERS-VALEUR", B, "NatIdTiers", "in_set",
             "Le type d'identifiant du tiers (NatIdTiers) est inconnu.",
             "Utiliser un code de 01 à 12 (01 SIRET, 02 SIREN, 03 FINESS, 04 NIR, 05 TVA intracommunautaire, 06 hors UE, ...).",
             param=NAT_ID_TIERS),
        Rule("TIERS-IDTIERS-ABSENT", B, "IdTiers", "not_null",
             "Le type d'identifiant (NatIdTiers) est renseigné mais l'identifiant du tiers (IdTiers) est absent.",
             "Saisir l'identifiant (SIRET, SIREN, ...) correspondant au type choisi, ou retirer NatIdTiers.",
             when=(nn("NatIdTiers", "notnull"),), value_column="NatIdTiers"),
        Rule("TIERS-NATIDTIERS-ABSENT", W, "NatIdTiers", "not_null",
             "L'identifiant du tiers (IdTiers) est renseigné sans son type (NatIdTiers) : Hélios ne peut pas le contrôler.",
             "Préciser le type d'identifiant : 01 pour un SIRET (14 chiffres), 02 pour un SIREN (9 chiffres), ...",
             when=(nn("IdTiers", "notnull"),), value_column="IdTiers"),
        Rule("TIERS-SIRET", B, "ok_siret", "true",
             "Le SIRET du tiers est invalide (14 chiffres et clé de contrôle attendus).",
             "Vérifier le SIRET sur l'avis de situation SIRENE ou annuaire-entreprises.data.gouv.fr et corriger la fiche tiers.",
             when=(nn("NatIdTiers", "==", "01"), nn("IdTiers", "notnull")), value_column="IdTiers"),
        Rule("TIERS-SIREN", B, "ok_siren", "true",
             "Le SIREN du tiers est invalide (9 chiffres et clé de contrôle attendus).",
             "Vérifier le SIREN sur annuaire-entreprises.data.gouv.fr et corriger la fiche tiers.",
             when=(nn("NatIdTiers", "==", "02"), nn("IdTiers", "notnull")), value_column="IdTiers"),
        Rule("TIERS-FINESS", B, "ok_finess", "true",
             "Le numéro FINESS du tiers est invalide (9 caractères et clé de contrôle attendus).",
             "Vérifier le numéro FINESS géographique sur finess.esante.gouv.fr et corriger la fiche tiers.",
             when=(nn("NatIdTiers", "==", "03"), nn("IdTiers", "notnull")), value_column="IdTiers"),
        Rule("TIERS-NIR", B, "ok_nir", "true",
             "Le NIR (numéro de sécurité sociale) du tiers est invalide (15 caractères, clé comprise).",
             "Reprendre les 13 chiffres et la clé à 2 chiffres figurant sur l'attestation de droits du tiers.",
             when=(nn("NatIdTiers", "==", "04"), nn("IdTiers", "notnull")), value_column="IdTiers"),
        Rule("TIERS-IDTIERS-FORMAT", B, "ok_idformat", "true",
             "La longueur ou la forme de l'identifiant ne correspond pas à son type (NatIdTiers 05 à 12).",
             "TVA : 4 à 18 caractères ; hors UE : 18 au plus ; TAHITI : 9 ; RIDET : 9 ou 10 chiffres ; "
             "FRWF : commence par FRWF ; IREP : commence par 5 chiffres ; NFP : 13 chiffres.",
             when=(nn("NatIdTiers", "in", NAT_ID_TIERS[4:]), nn("IdTiers", "notnull")), value_column="IdTiers"),
        Rule("TIERS-IDTIERS-PERSONNE", B, "NatIdTiers", "not_in_set",
             "Un NIR, un IREP ou un NFP n'est admis que pour une personne physique (CatTiers 01).",
             "Utiliser le SIRET ou le SIREN de la personne morale, ou corriger la catégorie du tiers.",
             param=["04", "11", "12"], when=(nn("CatTiers", "!=", "01"),)),
        # ---- catégorie et nature juridique
        Rule("TIERS-CATTIERS-ABSENT", B, "CatTiers", "not_null",
             "La catégorie du tiers (CatTiers) est absente.",
             "Renseigner la catégorie : 01 personne physique, 50 personne morale de droit privé, 23 commune, ...",
             family="categorie"),
        Rule("TIERS-CATTIERS-VALEUR", B, "CatTiers", "in_set",
             "La catégorie du tiers (CatTiers) n'existe pas.",
             "Valeurs admises : 01, 20 à 29, 50, 60 à 65, 70 à 74.",
             param=CAT_TIERS, family="categorie"),
        Rule("TIERS-NATJUR-ABSENT", B, "NatJur", "not_null",
             "La nature juridique du tiers (NatJur) est absente.",
             "Renseigner la nature juridique : 01 particulier, 03 société, 06 association, 09 collectivité territoriale, ...",
             family="categorie"),
        Rule("TIERS-NATJUR-VALEUR", B, "NatJur", "in_set",
             "La nature juridique du tiers (NatJur) n'existe pas.",
             "Valeurs admises : 01 à 11.",
             param=NAT_JUR, family="categorie"),
        Rule("TIERS-CATNAT", B, "CatNat", "in_set",
             "Le couple catégorie / nature juridique du tiers n'est pas admis par Hélios (annexe 3).",
             "Choisir une nature juridique compatible avec la catégorie (ex. 01/01 particulier, 50/03 société, "
             "22/09 département) ; la table des couples est dans schemas/quality/catjur_pairs.csv.",
             param=sorted(pairs),
             when=(nn("CatTiers", "in", CAT_TIERS), nn("NatJur", "in", NAT_JUR)), family="categorie"),
        Rule("TIERS-CIVILITE-ABSENTE", B, "Civilite", "not_null",
             "La civilité est obligatoire pour une personne physique (CatTiers 01).",
             "Saisir la civilité du tiers (M., Mme).",
             when=(nn("CatTiers", "==", "01"),), family="categorie"),
        Rule("TIERS-CIVILITE-INTERDITE", B, "Civilite", "null",
             "La civilité n'est admise que pour une personne physique (CatTiers 01).",
             "Retirer la civilité de la fiche de cette personne morale, ou corriger sa catégorie.",
             when=(nn("CatTiers", "notnull"), nn("CatTiers", "!=", "01")), family="categorie"),
        Rule("TIERS-CIVILITE-OBSOLETE", W, "Civilite", "not_in_set",
             "La civilité « Mademoiselle » n'existe plus et ne doit plus être utilisée.",
             "Remplacer par « Mme ».",
             param=sorted({v for c in params["civilites_obsoletes"] for v in (str(c), str(c).capitalize(), str(c).lower())}),
             family="categorie"),
        Rule("TIERS-CIVILITE-LONGUEUR", B, "Civilite", "max_len",
             "La civilité dépasse 10 caractères.", "Abréger la civilité (M., Mme, Dr, ...).",
             param=10, family="categorie"),
        Rule("TIERS-PRENOM-ABSENT", B, "Prenom", "not_null",
             "Le prénom est obligatoire pour une personne physique (CatTiers 01).",
             "Saisir le prénom du tiers.",
             when=(nn("CatTiers", "==", "01"),), family="categorie"),
        Rule("TIERS-PRENOM-INTERDIT", B, "Prenom", "null",
             "Le prénom n'est admis que pour une personne physique (CatTiers 01).",
             "Retirer le prénom de la fiche de cette personne morale (le mettre au besoin dans le complément de nom).",
             when=(nn("CatTiers", "notnull"), nn("CatTiers", "!=", "01")), family="categorie"),
        # ---- nom
        Rule("TIERS-NOM-ABSENT", B, "Nom", "not_null",
             "Le nom ou la raison sociale du tiers est absent.", "Saisir le nom ou la raison sociale.", family="nom"),
        Rule("TIERS-NOM-LONGUEUR", B, "Nom", "max_len",
             "Le nom du tiers dépasse 38 caractères (norme postale).",
             "Raccourcir le nom à 38 caractères et reporter la suite dans le complément de nom (ComplNom).",
             param=38, family="nom"),
        Rule("TIERS-COMPLNOM-LONGUEUR", B, "ComplNom", "max_len",
             "Le complément de nom dépasse 38 caractères (norme postale).", "Raccourcir à 38 caractères.",
             param=38, family="nom"),
        Rule("TIERS-PRENOM-LONGUEUR", B, "Prenom", "max_len",
             "Le prénom dépasse 38 caractères (norme postale).", "Raccourcir à 38 caractères.",
             param=38, family="nom"),
        # ---- adresse
        Rule("TIERS-ADRESSE-ABSENTE", B, "Adresse", "not_null",
             "Un tiers de titre de recette doit avoir une adresse.",
             "Compléter l'adresse du débiteur dans sa fiche tiers.",
             when=(nn("flux", "==", "recette"),), value_column="Nom", family="adresse"),
        Rule("TIERS-ADRESSE-MANQUANTE", W, "Adresse", "not_null",
             "Le tiers n'a pas d'adresse : Hélios ne pourra pas le créer s'il ne le connaît pas déjà.",
             "Compléter l'adresse du créancier dans sa fiche tiers.",
             when=(nn("flux", "!=", "recette"),), value_column="Nom", family="adresse"),
        Rule("TIERS-ADR2-ABSENTE", B, "Adr2", "not_null",
             "La ligne d'adresse principale (numéro et voie, Adr2) est absente.",
             "Saisir le numéro et le nom de la voie (ou le lieu-dit) dans la ligne Adr2.",
             when=(nn("has_adresse", "==", True),), family="adresse"),
        *(
            Rule(f"TIERS-{c.upper()}-LONGUEUR", B, c, "max_len",
                 f"La ligne d'adresse {c} dépasse 38 caractères (norme postale).",
                 "Raccourcir la ligne à 38 caractères ou répartir l'adresse sur Adr1, Adr2, Adr3.",
                 param=38, family="adresse")
            for c in ("Adr1", "Adr2", "Adr3")
        ),
        Rule("TIERS-CP-ABSENT", B, "CP", "not_null",
             "Le code postal est absent.", "Saisir le code postal sur 5 chiffres (99999 pour un tiers à l'étranger).",
             when=(nn("has_adresse", "==", True),), family="adresse"),
        Rule("TIERS-CP-FORMAT", B, "CP", "regex",
             "Le code postal doit comporter exactement 5 chiffres.",
             "Saisir les 5 chiffres (ex. 01000, pas 1000) ; pour un tiers à l'étranger, mettre 99999 et "
             "le code postal étranger dans la ville.",
             param=r"^[0-9]{5}$", family="adresse"),
        Rule("TIERS-CP-ETRANGER", W, "CP", "in_set",
             "Tiers non résident (CodRes=1) : le code postal attendu est 99999.",
             "Mettre 99999 dans le code postal et le code postal étranger dans la ville.",
             param=["99999"], when=(nn("CodRes", "==", "1"),), family="adresse"),
        Rule("TIERS-VILLE-ABSENTE", B, "Ville", "not_null",
             "La ville est absente.", "Saisir la localité (ou le libellé CEDEX).",
             when=(nn("has_adresse", "==", True),), family="adresse"),
        Rule("TIERS-VILLE-LONGUEUR", B, "Ville", "max_len",
             "La ville dépasse 38 caractères (norme postale).", "Abréger le nom de la localité à 38 caractères.",
             param=38, family="adresse"),
        Rule("TIERS-CODRES-ABSENT", B, "CodRes", "not_null",
             "Le code résidence (CodRes) est absent.", "Mettre 0 pour un tiers résidant en France, 1 sinon.",
             when=(nn("has_adresse", "==", True),), family="adresse"),
        Rule("TIERS-CODRES-VALEUR", B, "CodRes", "in_set",
             "Le code résidence (CodRes) doit valoir 0 (résident) ou 1 (non résident).",
             "Mettre 0 pour un tiers résidant en France, 1 sinon.", param=["0", "1"], family="adresse"),
        Rule("TIERS-CODPAYS-ABSENT", B, "CodPays", "not_null",
             "Tiers non résident (CodRes=1) sans code pays.",
             "Saisir le code pays INSEE à 3 chiffres (ex. 109 Allemagne, 131 Belgique).",
             when=(nn("CodRes", "==", "1"),), family="adresse"),
        Rule("TIERS-CODPAYS-FORMAT", B, "CodPays", "regex",
             "Le code pays doit être le code INSEE à 3 chiffres.", "Saisir le code pays INSEE (ex. 109, 131).",
             param=r"^[0-9]{3}$", family="adresse"),
        Rule("TIERS-CODPAYS-RESIDENT", B, "CodPays", "in_set",
             "Tiers résident (CodRes=0) : le code pays doit être absent ou valoir 100 (France).",
             "Retirer le code pays, ou passer CodRes à 1 si le tiers réside à l'étranger.",
             param=["100"], when=(nn("CodRes", "==", "0"),), family="adresse"),
        # ---- banque
        Rule("TIERS-BANQUE-INCOMPLET", B, "ok_cpte_complet", "true",
             "Coordonnées bancaires incomplètes : il faut soit un RIB complet (banque, guichet, compte, clé), soit un IBAN.",
             "Compléter les 4 zones du RIB, ou les remplacer par l'IBAN (et le BIC) du relevé d'identité bancaire.",
             when=(nn("has_cpte", "==", True),), value_column="bank_sig", family="banque"),
        Rule("TIERS-RIB-FORMAT", B, "ok_rib_format", "true",
             "RIB mal formé : code banque 5 caractères, code guichet 5, numéro de compte 11, clé 2 chiffres.",
             "Recopier le RIB exactement, zéros de tête compris (ex. guichet 00866).",
             when=(nn("has_rib", "==", True), nn("ok_cpte_complet", "==", True)), value_column="bank_sig",
             family="banque"),
        Rule("TIERS-RIB-CLE", B, "ok_rib", "true",
             "La clé RIB ne correspond pas au code banque, au guichet et au numéro de compte.",
             "Vérifier le RIB sur le relevé d'identité bancaire du tiers (une erreur de recopie est probable).",
             when=(nn("ok_rib_format", "==", True),), value_column="bank_sig", family="banque"),
        Rule("TIERS-IBAN-MAJUSCULES", B, "IBAN", "not_regex",
             "L'IBAN contient des minuscules : Hélios rejette alors tout le fichier.",
             "Saisir l'IBAN en majuscules, sans espace.", param=r"[a-z]", family="banque"),
        Rule("TIERS-IBAN-INVALIDE", B, "ok_iban", "true",
             "L'IBAN est invalide (longueur du pays, structure ou clé de contrôle ISO 13616).",
             "Recopier l'IBAN du relevé d'identité bancaire, sans espace ; la clé (3e et 4e caractères) doit correspondre.",
             when=(nn("IBAN", "notnull"),), value_column="IBAN", family="banque"),
        Rule("TIERS-IBAN-CLE-RIB", W, "ok_iban_rib", "true",
             "La clé RIB contenue dans cet IBAN français est incohérente.",
             "Vérifier l'IBAN auprès du tiers (les deux derniers chiffres sont la clé RIB).",
             when=(nn("ok_iban", "==", True),), value_column="IBAN", family="banque"),
        Rule("TIERS-BIC-MAJUSCULES", B, "BIC", "not_regex",
             "Le BIC contient des minuscules : Hélios rejette alors tout le fichier.",
             "Saisir le BIC en majuscules.", param=r"[a-z]", family="banque"),
        Rule("TIERS-BIC-FORMAT", B, "BIC", "regex",
             "Le BIC doit comporter 8 ou 11 caractères (banque, pays, localité, agence).",
             "Recopier le BIC du relevé d'identité bancaire (ex. SOGEFRPP ou SOGEFRPPXXX).",
             param=rf"^(?i:{BIC_RE})$", family="banque"),
        Rule("TIERS-BIC-ABSENT", B, "BIC", "not_null",
             "Le BIC est obligatoire pour un compte domicilié à l'étranger.",
             "Saisir le BIC de la banque étrangère figurant sur le relevé d'identité bancaire.",
             when=(nn("iban_etranger", "==", True),), value_column="IBAN", family="banque"),
        Rule("TIERS-TITCPTE-ABSENT", B, "TitCpte", "not_null",
             "Le titulaire du compte (TitCpte) est absent.",
             "Saisir le nom du titulaire tel qu'il figure sur le relevé d'identité bancaire.",
             when=(nn("has_cpte", "==", True),), value_column="Nom", family="banque"),
        Rule("TIERS-TITCPTE-LONGUEUR", B, "TitCpte", "max_len",
             "Le titulaire du compte dépasse 32 caractères.", "Abréger le nom du titulaire à 32 caractères.",
             param=32, family="banque"),
        # ---- cohérence dans le fichier
        Rule("TIERS-COHERENCE-BANQUE", W, "ok_coherence_banque", "true",
             "Le même tiers apparaît avec des coordonnées bancaires différentes dans ce fichier.",
             "Vérifier le compte à payer : un changement de RIB non vérifié est un risque de fraude.",
             value_column="bank_sig", family="coherence"),
        Rule("TIERS-COHERENCE-NOM", W, "ok_coherence_nom", "true",
             "Le même identifiant de tiers apparaît sous des noms différents dans ce fichier.",
             "Vérifier qu'il s'agit bien du même tiers et harmoniser le nom.",
             value_column="Nom", family="coherence"),
    ]
    overrides = params.get("severites") or {}
    out = []
    for r in rules:
        sev = overrides.get(r.code)
        if sev == "off":
            continue
        if sev in ("blocking", "warning"):
            r = Rule(**{**r.__dict__, "severity": sev})
        out.append(r)
    return out

