"""File names and identifiers of the @ctes exchanges.

IDActe = DPT-SIREN-AAAAMMJJ-NUMERO-NATURE; inside an archive every file is
[TYPEPJ-]IDACTE-CODE-SOUSCODE_n.ext (_0 the XML message, _1 the acte, _2... the annexes);
envelope EACT--SIREN--AAAAMMJJ-serial.xml, archive TDT-EACT--SIREN--AAAAMMJJ-serial.tar.gz.
The ministère names its envelopes EACT--SPREFdddA-SIREN-AAAAMMJJ-serial.xml (TACT-- on its
test platform), as in the reference samples.
"""

from __future__ import annotations

import re
from datetime import date

IDACTE_RE = re.compile(
    r"^(?P<departement>[09][0-9][0-9AB])-(?P<siren>[0-9]{9})-(?P<date>[0-9]{8})-"
    r"(?P<numero>[A-Za-z0-9_]{1,15})-(?P<nature>[A-Z]{2})$"
)
FILE_RE = re.compile(
    r"^(?:(?P<typologie>[0-9]{2}_[A-Z0-9]{2})-)?(?P<departement>[09][0-9][0-9AB])-(?P<siren>[0-9]{9})-"
    r"(?P<date>[0-9]{8})?-(?P<numero>[A-Za-z0-9_]{0,15})-(?P<nature>[A-Z]{2})?-"
    r"(?P<code>[0-9]-[0-9])(?:_(?P<n>[0-9]+))?\.(?P<ext>[A-Za-z0-9]+)$"
)
CL_ENVELOPE_RE = re.compile(r"^EACT--(?P<siren>[0-9]{9})--(?P<date>[0-9]{8})-(?P<serial>[0-9]+)\.xml$")
PREF_ENVELOPE_RE = re.compile(
    r"^(?P<prefix>[A-Z]ACT)--SPREF(?P<departement>[0-9]{2}[0-9AB])(?P<arrondissement>[0-9])-"
    r"(?P<siren>[0-9]{9})-(?P<date>[0-9]{8})-(?P<serial>[0-9]+)\.xml$"
)


def make_idacte(departement: str, siren: str, day: date, numero: str, nature: str) -> str:
    idacte = f"{departement}-{siren}-{day:%Y%m%d}-{numero}-{nature}"
    if not IDACTE_RE.match(idacte):
        raise ValueError(f"IDActe « {idacte} » non conforme (attendu DPT-SIREN-AAAAMMJJ-NUMERO-NATURE)")
    return idacte


def parse_idacte(idacte: str) -> dict[str, str]:
    m = IDACTE_RE.match(idacte or "")
    if not m:
        raise ValueError(f"IDActe « {idacte} » non conforme (attendu DPT-SIREN-AAAAMMJJ-NUMERO-NATURE)")
    return m.groupdict()


def message_name(idacte: str, code: str, n: int = 0) -> str:
    return f"{idacte}-{code}_{n}.xml"


def document_name(idacte: str, code: str, n: int, extension: str, typologie: str = "") -> str:
    prefix = f"{typologie}-" if typologie else ""
    return f"{prefix}{idacte}-{code}_{n}.{extension.lower()}"


def parse_file_name(name: str) -> dict[str, str] | None:
    """Parts of a [TYPEPJ-]DPT-SIREN-DATE-NUMERO-NATURE-CODE_n.ext name; None if it is not one."""
    m = FILE_RE.match(name.rsplit("/", 1)[-1])
    if not m:
        return None
    parts = {k: (v or "") for k, v in m.groupdict().items()}
    if parts["date"] and parts["numero"] and parts["nature"]:
        parts["idacte"] = f"{parts['departement']}-{parts['siren']}-{parts['date']}-{parts['numero']}-{parts['nature']}"
    else:
        parts["idacte"] = ""
    return parts


def envelope_name(siren: str, day: date, serial: int) -> str:
    return f"EACT--{siren}--{day:%Y%m%d}-{serial}.xml"


def archive_name(trigram: str, envelope: str) -> str:
    return f"{trigram}-{envelope.removesuffix('.xml')}.tar.gz"


def pref_envelope_name(departement: str, arrondissement: int | str, siren: str, day: date, serial: int,
                       prefix: str = "EACT") -> str:
    return f"{prefix}--SPREF{departement}{arrondissement}-{siren}-{day:%Y%m%d}-{serial}.xml"
