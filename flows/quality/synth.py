"""Synthetic tiers frames (same columns as extract_tiers) with controlled defects, vectorised so a
million rows take seconds. Used by the benchmark and by the GE-versus-pandas cross-check."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flows.quality.extract import COLUMNS

DEFECTS = (
    "siret_cle",
    "siren_longueur",
    "cp_4_chiffres",
    "nom_long",
    "civilite_absente",
    "prenom_interdit",
    "catnat_interdit",
    "cattiers_inconnu",
    "iban_minuscules",
    "iban_cle",
    "rib_cle",
    "bic_absent_etranger",
    "bic_format",
    "titcpte_absent",
    "ville_longue",
    "codpays_absent",
    "adr2_absente",
)

_VILLES = np.array(["MONT-DE-MARSAN", "DAX", "BISCARROSSE", "MIMIZAN", "SAINT-SEVER", "AIRE-SUR-L'ADOUR"], dtype=object)
_VOIES = np.array(["RUE DES PINS", "AVENUE DE LA GARE", "CHEMIN DU MOULIN", "PLACE DE LA MAIRIE"], dtype=object)
_PRENOMS = np.array(["JEANNE", "PIERRE", "MARIE", "LUC", "ANNE", "PAUL"], dtype=object)
_NOMS = np.array(["DUPONT", "LABORDE", "DARRIGRAND", "LAFARGUE", "DUCASSE", "LACOSTE"], dtype=object)
_SOCIETES = np.array(["BOIS DES LANDES", "TRANSPORTS DU SUD", "BATI 40", "RESINE ET CIE", "GARAGE CENTRAL"], dtype=object)


def _digits(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    return rng.integers(0, 10, size=(n, width), dtype=np.int64)


def _luhn_check_digit(d: np.ndarray) -> np.ndarray:
    """The digit to append to each row of d so that the whole is Luhn-valid."""
    w = d.shape[1] + 1
    full = np.concatenate([d, np.zeros((len(d), 1), dtype=np.int64)], axis=1)
    doubled = np.zeros(w, dtype=bool)
    doubled[w - 2 :: -2] = True
    x = full.copy()
    x[:, doubled] *= 2
    x[x > 9] -= 9
    return (10 - x.sum(axis=1) % 10) % 10


def _join(d: np.ndarray) -> np.ndarray:
    """Digit matrix -> array of strings."""
    return (d.astype(np.uint8) + 48).view(f"S{d.shape[1]}").ravel().astype(str).astype(object)


def _mod97(strings: np.ndarray) -> np.ndarray:
    """Integer value mod 97 of digit strings (any length, at most 64)."""
    s = pd.Series(strings, dtype=object).str.rjust(64, "0")
    m = np.array(s.tolist(), dtype="S64").view(np.uint8).reshape(len(s), 64).astype(np.int64) - 48
    state = np.zeros(len(s), dtype=np.int64)
    for j in range(64):
        state = (state * 10 + m[:, j]) % 97
    return state


def sirets(rng: np.random.Generator, n: int, *, public: bool = False) -> np.ndarray:
    siren = _digits(rng, n, 8)
    if public:
        siren[:, 0] = 2
    siren = np.concatenate([siren, _luhn_check_digit(siren)[:, None]], axis=1)
    nic = _digits(rng, n, 4)
    body = np.concatenate([siren, nic], axis=1)
    return _join(np.concatenate([body, _luhn_check_digit(body)[:, None]], axis=1))


def ribs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    b, g, c = _digits(rng, n, 5), _digits(rng, n, 5), _digits(rng, n, 11)
    p = 10 ** np.arange(10, -1, -1, dtype=np.int64)
    key = 97 - (89 * (b @ p[-5:]) + 15 * (g @ p[-5:]) + 3 * (c @ p)) % 97
    keys = np.char.zfill(key.astype(str), 2).astype(object)
    return _join(b), _join(g), _join(c), keys


def ibans(country: str, bban: np.ndarray) -> np.ndarray:
    """IBANs from numeric BBANs: check digits = 98 - (BBAN + country digits + 00) mod 97."""
    cc = "".join(str(ord(ch) - 55) for ch in country)
    rem = _mod97(np.array([b + cc + "00" for b in bban], dtype=object))
    check = np.char.zfill((98 - rem).astype(str), 2)
    return np.array([country + k + b for k, b in zip(check, bban, strict=True)], dtype=object)


def synth_tiers_frame(n: int, *, defect_rate: float = 0.02, seed: int = 0, tiers_ratio: float = 0.05) -> pd.DataFrame:
    """n tiers occurrences drawn from about n*tiers_ratio distinct tiers; each defect of DEFECTS
    hits about defect_rate / len(DEFECTS) of the occurrences (so ~defect_rate are faulty)."""
    rng = np.random.default_rng(seed)
    k = max(1, int(n * tiers_ratio))
    kind = rng.choice(np.array(["pp", "pm", "pub"], dtype=object), size=k, p=[0.3, 0.6, 0.1])
    pp, pm, pub = kind == "pp", kind == "pm", kind == "pub"
    t = {c: np.full(k, None, dtype=object) for c in COLUMNS}
    t["CatTiers"] = np.where(pp, "01", np.where(pm, "50", "23")).astype(object)
    t["NatJur"] = np.where(pp, "01", np.where(pm, "03", "09")).astype(object)
    ids = np.where(pub, sirets(rng, k, public=True), sirets(rng, k))
    t["IdTiers"] = np.where(pp, None, ids).astype(object)
    t["NatIdTiers"] = np.where(pp, None, "01").astype(object)
    t["RefTiers"] = np.char.add("T", np.arange(k).astype(str)).astype(object)
    t["Civilite"] = np.where(pp, rng.choice(np.array(["M.", "Mme"], dtype=object), size=k), None).astype(object)
    t["Prenom"] = np.where(pp, _PRENOMS[rng.integers(0, len(_PRENOMS), k)], None).astype(object)
    t["Nom"] = np.where(pp, _NOMS[rng.integers(0, len(_NOMS), k)], _SOCIETES[rng.integers(0, len(_SOCIETES), k)])
    t["Nom"] = (t["Nom"].astype(str) + " " + np.arange(k).astype(str)).astype(object)
    t["Adresse"] = np.full(k, "1", dtype=object)
    t["TypAdr"] = np.full(k, "1", dtype=object)
    t["Adr2"] = (rng.integers(1, 200, k).astype(str).astype(object) + " " + _VOIES[rng.integers(0, len(_VOIES), k)])
    etranger = rng.random(k) < 0.03
    cps = np.char.zfill(rng.integers(1000, 95999, k).astype(str), 5).astype(object)
    t["CP"] = np.where(etranger, "99999", cps).astype(object)
    t["Ville"] = np.where(etranger, "10115 BERLIN", _VILLES[rng.integers(0, len(_VILLES), k)]).astype(object)
    t["CodRes"] = np.where(etranger, "1", "0").astype(object)
    t["CodPays"] = np.where(etranger, "109", None).astype(object)
    # bank: IBAN (FR, or DE for foreigners) 70 %, French RIB 20 %, none 10 %
    bank = rng.choice(np.array(["iban", "rib", "none"], dtype=object), size=k, p=[0.7, 0.2, 0.1])
    bank = np.where(etranger, "iban", bank)
    b, g, c, key = ribs(rng, k)
    fr_iban = ibans("FR", (b + g + c + key).astype(str))
    de_iban = ibans("DE", _join(_digits(rng, k, 18)).astype(str))
    is_iban, is_rib = bank == "iban", bank == "rib"
    t["CpteBancaire"] = np.where(bank != "none", "1", None).astype(object)
    t["IBAN"] = np.where(is_iban, np.where(etranger, de_iban, fr_iban), None).astype(object)
    t["BIC"] = np.where(is_iban, np.where(etranger, "DEUTDEFFXXX", "SOGEFRPP"), None).astype(object)
    for col, val in (("CodeEtab", b), ("CodeGuic", g), ("IdCpte", c), ("CleRib", key)):
        t[col] = np.where(is_rib, val, None).astype(object)
    t["TitCpte"] = np.where(bank != "none", t["Nom"].astype(str).astype("U32"), None).astype(object)

    pick = rng.integers(0, k, n)
    df = pd.DataFrame({c: v[pick] for c, v in t.items()}, columns=COLUMNS).astype(object)
    df["flux"] = "depense"
    per_bord = 5000
    i = np.arange(n)
    df["bordereau"] = (i // per_bord + 1).astype(str).astype(object)
    df["exercice"] = "2026"
    df["piece"] = ((i % per_bord) // 2 + 1).astype(str).astype(object)
    df["ligne"] = (i % 2 + 1).astype(str).astype(object)
    df["position"] = np.ones(n, dtype=np.int64)
    df["line"] = (i * 40 + 30).astype(object)

    per = defect_rate / len(DEFECTS)
    for name in DEFECTS:
        m = rng.random(n) < per
        if m.any():
            _inject(df, name, m)
    return df


def _inject(df: pd.DataFrame, name: str, m: np.ndarray) -> None:
    """Apply one defect to the masked rows (only where the defect is meaningful)."""
    def where(cond: pd.Series) -> np.ndarray:
        return m & cond.fillna(False).to_numpy(dtype=bool)

    if name == "siret_cle":
        sel = where(df["NatIdTiers"] == "01")
        last = df.loc[sel, "IdTiers"].str[-1].astype(int)
        df.loc[sel, "IdTiers"] = df.loc[sel, "IdTiers"].str[:-1] + ((last + 1) % 10).astype(str)
    elif name == "siren_longueur":
        df.loc[where(df["NatIdTiers"] == "01"), "NatIdTiers"] = "02"
    elif name == "cp_4_chiffres":
        df.loc[where(df["CP"].notna()), "CP"] = "4000"
    elif name == "nom_long":
        df.loc[m, "Nom"] = "ETABLISSEMENTS DE TRAVAUX PUBLICS ET DE VOIRIE DU SUD"
    elif name == "civilite_absente":
        df.loc[where(df["CatTiers"] == "01"), "Civilite"] = None
    elif name == "prenom_interdit":
        df.loc[where(df["CatTiers"] == "50"), "Prenom"] = "JEAN"
    elif name == "catnat_interdit":
        df.loc[where(df["CatTiers"] == "50"), "NatJur"] = "09"
    elif name == "cattiers_inconnu":
        df.loc[m, "CatTiers"] = "99"
    elif name == "iban_minuscules":
        sel = where(df["IBAN"].notna())
        df.loc[sel, "IBAN"] = df.loc[sel, "IBAN"].str.lower()
    elif name == "iban_cle":
        sel = where(df["IBAN"].notna())
        df.loc[sel, "IBAN"] = df.loc[sel, "IBAN"].str[:2] + "00" + df.loc[sel, "IBAN"].str[4:]
    elif name == "rib_cle":
        sel = where(df["CleRib"].notna())
        df.loc[sel, "CleRib"] = "00"
    elif name == "bic_absent_etranger":
        df.loc[where(df["CodRes"] == "1"), "BIC"] = None
    elif name == "bic_format":
        df.loc[where(df["BIC"].notna()), "BIC"] = "SOGEFR"
    elif name == "titcpte_absent":
        df.loc[where(df["CpteBancaire"].notna()), "TitCpte"] = None
    elif name == "ville_longue":
        df.loc[m, "Ville"] = "SAINT-REMY-EN-BOUZEMONT-SAINT-GENEST-ET-ISSON"
    elif name == "codpays_absent":
        df.loc[where(df["CodRes"] == "1"), "CodPays"] = None
    elif name == "adr2_absente":
        df.loc[m, "Adr2"] = None
    else:  # pragma: no cover
        raise ValueError(name)
