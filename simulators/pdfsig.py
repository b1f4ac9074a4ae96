"""The préfecture's own check of a signature inside a PDF (PAdES), with OpenSSL, not demat's pyHanko.

A signed PDF carries /ByteRange [a b c d] and /Contents <hex CMS>: the CMS must verify over the
bytes it names, with a signer certificate chaining to the counterpart's trust store, and the
signed ranges must cover the whole file but the signature value itself (anything appended after
signing is not signed). `openssl cms -verify` does the cryptography and the chain.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from simulators.xmlsig import TrustStore

BYTE_RANGE = re.compile(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]")


def is_signed(pdf: bytes) -> bool:
    return BYTE_RANGE.search(pdf) is not None


def verify_pdf(pdf: bytes, trust: TrustStore) -> list[str]:
    """French reasons the PDF's last signature does not hold (empty: it holds)."""
    ranges = BYTE_RANGE.findall(pdf)
    if not ranges:
        return []
    a, b, c, d = (int(x) for x in ranges[-1])
    if a != 0 or b > c or c + d != len(pdf) or c > len(pdf):
        return ["la signature ne couvre pas tout le document (contenu ajouté ou retiré après la signature)"]
    hexa = pdf[a + b:c].strip().strip(b"<>")
    try:
        der = bytes.fromhex(hexa.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return ["valeur de signature illisible (/Contents)"]
    der = _trim(der)
    if not der:
        return ["valeur de signature vide (/Contents)"]
    if not trust.certs:
        return ["aucune autorité de confiance configurée chez le destinataire : certificat non reconnu"]
    openssl = shutil.which("openssl")
    if openssl is None:
        return ["vérification impossible : openssl absent chez le destinataire"]
    with tempfile.TemporaryDirectory(prefix="pades-") as tmp:
        t = Path(tmp)
        (t / "sig.der").write_bytes(der)
        (t / "content.bin").write_bytes(pdf[a:a + b] + pdf[c:c + d])
        (t / "ca.pem").write_bytes(b"".join(Path(s).read_bytes() for s in trust.sources))
        run = subprocess.run(  # noqa: S603 - fixed arguments, files we wrote
            [openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(t / "sig.der"),
             "-content", str(t / "content.bin"), "-CAfile", str(t / "ca.pem"), "-purpose", "any",
             "-out", str(t / "out.bin")],
            capture_output=True, text=True, timeout=60, check=False)
    if run.returncode == 0:
        return []
    err = run.stderr.lower()
    if "certificate verify error" in err or "unable to get local issuer" in err or "self-signed" in err:
        return ["le certificat du signataire n'est pas émis par une autorité de confiance du destinataire"]
    if "digest failure" in err or "content verify error" in err or "signature failure" in err:
        return ["la signature ne correspond pas au contenu du document : il a été modifié après la signature"]
    return ["signature PDF invérifiable (" + (run.stderr.strip().splitlines() or ["?"])[-1][:200] + ")"]


def _trim(der: bytes) -> bytes:
    """/Contents is zero-padded: keep the DER object only (its length is in its header)."""
    if len(der) < 2 or der[0] != 0x30:
        return b""
    if der[1] & 0x80:
        n = der[1] & 0x7F
        size = 2 + n + int.from_bytes(der[2:2 + n], "big")
    else:
        size = 2 + der[1]
    return der[:size]
