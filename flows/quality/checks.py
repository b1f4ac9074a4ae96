"""Checksums used by the tiers gate, vectorised over pandas Series.

Hélios rejects a bordereau whose SIRET, SIREN, FINESS or NIR key is wrong, whose RIB key is wrong or
whose IBAN fails ISO 13616. A PES file can carry hundreds of thousands of tiers occurrences, so every
check works on a whole column at once (numpy on fixed-width byte matrices) instead of calling a
per-value library in a Python loop. The scalar functions (`siret_ok`, ...) call python-stdnum /
schwifty directly: they are the reference the tests compare the vectorised versions against.

Every vectorised function takes a Series of str/None and returns a bool Series on the same index:
True when the value is present and valid, False otherwise (absent values are False; the rules
decide separately whether absence is a fault).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

LA_POSTE_SIREN = "356000000"
LA_POSTE_SIEGE = "35600000000048"  # the head office SIRET follows Luhn, like everybody else

# Letter -> digit conversion of the French RIB (A-I=1-9, J-R=1-9, S-Z=2-9).
_RIB_LETTERS = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "12345678912345678923456789")


# --------------------------------------------------------------------------- scalar references


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def siret_ok(value: str | None) -> bool:
    """SIRET key (Luhn, La Poste exception) through python-stdnum."""
    from stdnum.fr import siret

    return _text(value) and value.isdigit() and siret.is_valid(value)


def siren_ok(value: str | None) -> bool:
    from stdnum.fr import siren

    return _text(value) and value.isdigit() and siren.is_valid(value)


def nir_ok(value: str | None) -> bool:
    """NIR (numéro de sécurité sociale) with its 2-digit key, Corsica 2A/2B handled by stdnum."""
    from stdnum.fr import nir

    return _text(value) and len(value) == 15 and value == value.strip().upper() and nir.is_valid(value)


def finess_ok(value: str | None) -> bool:
    """FINESS: 9 characters, last one a Luhn key over the 9 digits.

    python-stdnum has no FINESS module. The FINESS key is documented as a Luhn key; Corsican
    numbers start with 2A/2B and cannot carry a Luhn key over letters: their key is not checked
    (accepted when the other 7 characters are digits).
    """
    from stdnum import luhn

    if not _text(value) or len(value) != 9:
        return False
    if value[:2] in ("2A", "2B"):
        return value[2:].isdigit()
    return value.isdigit() and luhn.is_valid(value)


def rib_key(code_etab: str, code_guichet: str, compte: str) -> int:
    """The 2-digit French RIB key: 97 - ((89 b + 15 g + 3 c) mod 97), letters converted first."""
    b, g, c = (int(x.upper().translate(_RIB_LETTERS)) for x in (code_etab, code_guichet, compte))
    return 97 - ((89 * b + 15 * g + 3 * c) % 97)


def rib_ok(code_etab: str | None, code_guichet: str | None, compte: str | None, cle: str | None) -> bool:
    if not all(_text(x) for x in (code_etab, code_guichet, compte, cle)):
        return False
    if not (
        len(code_etab) == 5
        and len(code_guichet) == 5
        and len(compte) == 11
        and len(cle) == 2
        and cle.isdigit()
        and (code_etab + code_guichet + compte).isalnum()
        and (code_etab + code_guichet + compte).isascii()
    ):
        return False
    return rib_key(code_etab, code_guichet, compte) == int(cle)


def iban_ok(value: str | None) -> bool:
    """ISO 13616 IBAN (country length and structure, mod 97) through schwifty. Uppercase only."""
    from schwifty import IBAN
    from schwifty.exceptions import SchwiftyException

    if not _text(value) or value != value.upper() or not value.isalnum() or not value.isascii():
        return False
    try:
        IBAN(value, validate_bban=False)
    except (SchwiftyException, ValueError):
        return False
    return True


# --------------------------------------------------------------------------- vectorised helpers


def _digit_matrix(values: pd.Series, width: int) -> np.ndarray:
    """(n, width) uint8 matrix of the characters of fixed-width ASCII strings (raw byte codes)."""
    if len(values) == 0:
        return np.zeros((0, width), dtype=np.uint8)
    raw = np.array(values.tolist(), dtype=f"S{width}")
    return raw.view(np.uint8).reshape(len(values), width)


def _luhn_matrix(digits: np.ndarray) -> np.ndarray:
    """Luhn validity of each row of a (n, w) matrix of digit values 0-9."""
    w = digits.shape[1]
    d = digits.astype(np.int16)
    doubled = np.zeros(w, dtype=bool)
    doubled[w - 2 :: -2] = True  # every second digit from the right, starting with the second-to-last
    d[:, doubled] *= 2
    d[d > 9] -= 9
    return d.sum(axis=1) % 10 == 0


def _str(values: pd.Series) -> pd.Series:
    """The Series as object dtype with None for missing (so .str works whatever came in)."""
    return values.astype(object).where(values.notna(), None)


def digits_of_length(values: pd.Series, length: int) -> pd.Series:
    """True where the value is exactly `length` ASCII digits."""
    s = _str(values)
    return s.str.fullmatch(rf"[0-9]{{{length}}}", na=False).astype(bool)


def luhn_valid(values: pd.Series, length: int) -> pd.Series:
    """True where the value is `length` digits with a valid Luhn key."""
    s = _str(values)
    fmt = digits_of_length(s, length)
    out = pd.Series(False, index=s.index)
    if fmt.any():
        m = _digit_matrix(s[fmt], length) - 48
        out[fmt] = _luhn_matrix(m)
    return out


def siren_valid(values: pd.Series) -> pd.Series:
    return luhn_valid(values, 9)


def siret_valid(values: pd.Series) -> pd.Series:
    """SIRET: 14 digits, Luhn on the 14 and on the SIREN part, except La Poste establishments
    (SIREN 356000000, other than the head office) whose digit sum must be a multiple of 5."""
    s = _str(values)
    fmt = digits_of_length(s, 14)
    out = pd.Series(False, index=s.index)
    if fmt.any():
        m = _digit_matrix(s[fmt], 14) - 48
        luhn14 = _luhn_matrix(m)
        luhn9 = _luhn_matrix(m[:, :9])
        sub = s[fmt]
        la_poste = (sub.str.startswith(LA_POSTE_SIREN) & (sub != LA_POSTE_SIEGE)).to_numpy(dtype=bool)
        sum5 = m.astype(np.int32).sum(axis=1) % 5 == 0
        out[fmt] = np.where(la_poste, sum5, luhn14) & luhn9
    return out


def finess_valid(values: pd.Series) -> pd.Series:
    """FINESS: 9 digits with a Luhn key; Corsican 2A/2B numbers are accepted unchecked (see finess_ok)."""
    s = _str(values)
    corse = s.str.fullmatch(r"2[AB][0-9]{7}", na=False).astype(bool)
    return luhn_valid(s, 9) | corse


def nir_valid(values: pd.Series) -> pd.Series:
    """NIR: 15 characters (2A/2B allowed in the department), key = 97 - (first 13 mod 97)."""
    s = _str(values)
    fmt = s.str.fullmatch(r"[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}", na=False).astype(bool)
    out = pd.Series(False, index=s.index)
    if fmt.any():
        sub = s[fmt]
        body = sub.str[:13].str.replace("2A", "19", regex=False).str.replace("2B", "18", regex=False)
        n = body.astype("int64").to_numpy()
        key = sub.str[13:].astype("int64").to_numpy()
        out[fmt] = (97 - n % 97) == key
    return out


# Byte lookup tables: value of a character in the RIB conversion and in the IBAN mod-97 expansion.
_RIB_LUT = np.full(256, 255, dtype=np.int64)
_IBAN_VAL = np.full(256, -1, dtype=np.int64)
_IBAN_MUL = np.ones(256, dtype=np.int64)
for _i in range(10):
    _RIB_LUT[48 + _i] = _i
    _IBAN_VAL[48 + _i] = _i
    _IBAN_MUL[48 + _i] = 10
for _i, _ch in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
    _RIB_LUT[ord(_ch)] = int(_ch.translate(_RIB_LETTERS))
    _IBAN_VAL[ord(_ch)] = 10 + _i
    _IBAN_MUL[ord(_ch)] = 100


def rib_format_valid(etab: pd.Series, guichet: pd.Series, compte: pd.Series, cle: pd.Series) -> pd.Series:
    """The four RIB parts present with their exact lengths (5 / 5 / 11 alphanumeric, key 2 digits)."""
    return (
        _str(etab).str.fullmatch(r"[0-9A-Za-z]{5}", na=False).astype(bool)
        & _str(guichet).str.fullmatch(r"[0-9A-Za-z]{5}", na=False).astype(bool)
        & _str(compte).str.fullmatch(r"[0-9A-Za-z]{11}", na=False).astype(bool)
        & _str(cle).str.fullmatch(r"[0-9]{2}", na=False).astype(bool)
    )


def rib_valid(etab: pd.Series, guichet: pd.Series, compte: pd.Series, cle: pd.Series) -> pd.Series:
    """RIB key check: key == 97 - ((89 b + 15 g + 3 c) mod 97) after letter conversion."""
    fmt = rib_format_valid(etab, guichet, compte, cle)
    out = pd.Series(False, index=etab.index)
    if fmt.any():
        joined = (_str(etab)[fmt] + _str(guichet)[fmt] + _str(compte)[fmt]).str.upper()
        m = _RIB_LUT[_digit_matrix(joined, 21)]
        p10 = 10 ** np.arange(10, -1, -1, dtype=np.int64)
        b = m[:, :5] @ p10[-5:]
        g = m[:, 5:10] @ p10[-5:]
        c = m[:, 10:21] @ p10
        k = _str(cle)[fmt].astype("int64").to_numpy()
        out[fmt] = 97 - (89 * b + 15 * g + 3 * c) % 97 == k  # key in 01..97: "00" is never valid
    return out


@lru_cache(maxsize=512)
def _iban_spec(country: str):
    """(length, compiled BBAN regex) for a country, or None when the country has no IBAN."""
    from schwifty import registry

    try:
        spec = registry.get_iban_spec(country)
    except Exception:  # schwifty raises different errors for unknown countries depending on version
        return None
    return spec.iban_length, spec.regex


def iban_valid(values: pd.Series) -> pd.Series:
    """ISO 13616: uppercase [A-Z]{2}[0-9]{2} + BBAN, length and BBAN structure of the country
    (schwifty's registry), and mod 97 == 1 over the rearranged string."""
    s = _str(values)
    fmt = s.str.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{1,30}", na=False).astype(bool)
    out = pd.Series(False, index=s.index)
    if not fmt.any():
        return out
    sub = s[fmt]
    country = sub.str[:2]
    structure = pd.Series(False, index=sub.index)
    for cc, idx in country.groupby(country).groups.items():
        spec = _iban_spec(cc)
        if spec is None:
            continue
        length, regex = spec
        part = sub.loc[idx]
        ok_len = part.str.len() == length
        ok_bban = part.str[4:].str.fullmatch(regex.pattern, na=False).astype(bool)
        structure.loc[idx] = (ok_len & ok_bban).to_numpy()
    if structure.any():
        good = sub[structure]
        rearranged = (good.str[4:] + good.str[:4]).str.rjust(34, "0")
        m = _digit_matrix(rearranged, 34)
        vals = _IBAN_VAL[m]
        muls = _IBAN_MUL[m]
        state = np.zeros(len(good), dtype=np.int64)
        for j in range(34):
            state = (state * muls[:, j] + vals[:, j]) % 97
        structure.loc[good.index] = state == 1
    out[fmt] = structure.to_numpy()
    return out


def iban_rib_valid(values: pd.Series) -> pd.Series:
    """For French-format IBANs (FR, MC and the overseas codes using the French BBAN), the RIB key
    embedded in the BBAN. True where not applicable."""
    s = _str(values)
    fr = s.str.fullmatch(r"(?:FR|MC|GF|GP|MQ|RE|YT|NC|PF|PM|BL|MF|WF|TF)[0-9]{2}[0-9]{10}[A-Z0-9]{11}[0-9]{2}", na=False)
    fr = fr.astype(bool)
    out = pd.Series(True, index=s.index)
    if fr.any():
        sub = s[fr]
        out[fr] = rib_valid(sub.str[4:9], sub.str[9:14], sub.str[14:25], sub.str[25:27]).to_numpy()
    return out
