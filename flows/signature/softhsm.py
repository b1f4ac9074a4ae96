"""SoftHSM2 tokens for the demo and the tests: one per official, one for the server seal.

Each token gets a generated PIN (and SO PIN) written 0600 beside the others, its RSA 2048 key
generated ON the token (it never exists elsewhere), and a certificate from the demo CA for that
public key, stored on the token and beside it (public). Possession of the key is proven before
issuing: the token signs a random challenge that the public key must verify (what a CSR's
self-signature proves). Running twice reuses tokens whose PIN file and certificate are still good.

`softhsm2-util --init-token` takes the PINs as arguments (it has no other non-interactive
input): they are visible to the machine's own processes for that instant, acceptable for a demo
token and never written to a log.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from flows.signature.certs import CertificateRefused, common_name
from flows.signature.pki import SIGNER_YEARS, _load_ca, create_demo_pki, make_certificate, write_private
from flows.signature.token import TokenConfig, default_module

SEAL_ID = "cachet-serveur"
RENEW_BEFORE_DAYS = 30
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")


class ProvisioningError(RuntimeError):
    """SoftHSM2 could not be set up; French message."""


class _PublicOnly:
    """What make_certificate needs from a key when only the public half exists here."""

    def __init__(self, public_key) -> None:
        self._pub = public_key

    def public_key(self):
        return self._pub


def softhsm_util() -> str:
    path = shutil.which("softhsm2-util")
    if not path:
        raise ProvisioningError("softhsm2-util est absent : installez le paquet Debian softhsm2 (apt-get install -y softhsm2).")
    return path


def ensure_config(directory: str | Path) -> Path:
    """`<directory>/softhsm2.conf` with its token folder `<directory>/tokens` (0700)."""
    directory = Path(directory)
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    os.chmod(tokens, 0o700)
    conf = directory / "softhsm2.conf"
    text = f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
    if not conf.exists() or conf.read_text() != text:
        conf.write_text(text)
    return conf


def _run(args: list[str], conf: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    return subprocess.run([softhsm_util(), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def _token_exists(label: str, conf: Path) -> bool:
    res = _run(["--show-slots"], conf)
    return any(line.strip() == f"Label:            {label}" or line.split(":", 1)[-1].strip() == label
               for line in res.stdout.splitlines() if line.strip().startswith("Label:"))


def _new_pin() -> str:
    return f"{secrets.randbelow(10**8):08d}"


def _read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _issue_on_token(config: TokenConfig, pin: str, key_id: bytes, name: str, role: str | None,
                    ca: tuple, *, seal_of: str | None = None) -> x509.Certificate:
    """Generate the key on the token, prove possession, issue and store its certificate."""
    from pkcs11 import Attribute, CertificateType, KeyType, Mechanism, ObjectClass

    from flows.signature.token import DIGEST_INFO, _get_token

    token = _get_token(config)
    with token.open(user_pin=pin, rw=True) as session:
        pub, priv = session.generate_keypair(KeyType.RSA, 2048, store=True, label=config.key_label, id=key_id)
        numbers = rsa.RSAPublicNumbers(int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big"),
                                       int.from_bytes(pub[Attribute.MODULUS], "big"))
        public_key = numbers.public_key()
        challenge = secrets.token_bytes(32)
        h = hashes.Hash(hashes.SHA256())
        h.update(challenge)
        proof = priv.sign(DIGEST_INFO["sha256"] + h.finalize(), mechanism=Mechanism.RSA_PKCS)
        public_key.verify(bytes(proof), challenge, padding.PKCS1v15(), hashes.SHA256())  # raises if not the same key
        title = "Cachet serveur" if seal_of else role
        _key, cert = make_certificate(name, issuer=ca, key=_PublicOnly(public_key), role=title, days=365 * SIGNER_YEARS)
        der = cert.public_bytes(serialization.Encoding.DER)
        session.create_object({
            Attribute.CLASS: ObjectClass.CERTIFICATE,
            Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
            Attribute.TOKEN: True,
            Attribute.LABEL: config.key_label,
            Attribute.ID: key_id,
            Attribute.SUBJECT: cert.subject.public_bytes(),
            Attribute.VALUE: der,
        })
    return cert


def _token_cert_ok(config: TokenConfig, pem: Path, name: str, ca_cert: x509.Certificate) -> x509.Certificate | None:
    from flows.signature.token import TokenError, read_certificate

    try:
        der = read_certificate(config)
        cert = x509.load_der_x509_certificate(der)
    except (TokenError, ValueError):
        return None
    ok = (common_name(cert) == name and cert.issuer == ca_cert.subject
          and cert.not_valid_after_utc - datetime.now(UTC) > timedelta(days=RENEW_BEFORE_DAYS))
    if ok and not pem.exists():
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert if ok else None


def _provision_one(directory: Path, conf: Path, oid: str, name: str, role: str | None, ca: tuple,
                   module: str, *, seal_of: str | None = None) -> tuple[dict, bool]:
    label = f"demat-{oid}"[:32]
    config = TokenConfig(label=label, module=module, key_label=oid, softhsm_conf=str(conf))
    pin_file, so_file, pem = directory / f"{oid}.pin", directory / f"{oid}.sopin", directory / f"{oid}.pem"
    created = False
    cert = None
    if _token_exists(label, conf) and _read_secret(pin_file):
        cert = _token_cert_ok(config, pem, name, ca[1])
    if cert is None:
        if _token_exists(label, conf):
            res = _run(["--delete-token", "--token", label], conf)
            if res.returncode != 0:
                raise ProvisioningError(f"Impossible de supprimer l'ancien support « {label} » : {res.stderr.strip()[:200]}")
        pin, so_pin = _new_pin(), secrets.token_urlsafe(12)
        write_private(pin_file, (pin + "\n").encode("ascii"))
        write_private(so_file, (so_pin + "\n").encode("ascii"))
        res = _run(["--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin], conf)
        if res.returncode != 0:
            raise ProvisioningError(f"softhsm2-util n'a pas pu créer le support « {label} » (code {res.returncode}).")
        from flows.signature.token import _lib

        _lib(config, refresh=True)  # the module learns about the new token
        cert = _issue_on_token(config, pin, oid.encode("ascii")[:16], name, role, ca, seal_of=seal_of)
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        created = True
    info = {
        "label": label, "key_label": oid, "module": module, "softhsm_conf": str(conf),
        "pin_file": str(pin_file), "so_pin_file": str(so_file), "certificate": str(pem),
        "name": name, "role": role, "not_after": cert.not_valid_after_utc.isoformat(),
        "cert_sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }
    return info, created


def provision_tokens(
    directory: str | Path,
    officials: list[tuple[str, str, str]],
    *,
    pki_dir: str | Path | None = None,
    seal: str | None = None,
    module: str | None = None,
) -> dict:
    """Create or reuse one SoftHSM2 token per official, and one for the seal when `seal` names its holder.

    `seal` is the collectivité's or operator's name: the seal certificate's subject says
    "Cachet serveur — <name>". The CA is the demo PKI's (pki_dir, default `<directory>/pki`).
    Returns paths and labels only, never a PIN: {"conf", "module", "ca", "officials": {id: info},
    "seal": info | None, "created": [...], "reused": [...]}.
    """
    for oid, _n, _r in officials:
        if not _ID_RE.match(oid) or oid == SEAL_ID:
            raise ValueError(f"Identifiant d'élu invalide pour un support : « {oid} » (lettres, chiffres, - et _).")
    directory = Path(directory)
    conf = ensure_config(directory)
    module = module or default_module()
    pki_dir = Path(pki_dir) if pki_dir else directory / "pki"
    create_demo_pki(pki_dir, [], ca_key_size=2048)
    ca = _load_ca(pki_dir)
    if ca is None:
        raise CertificateRefused("L'AC de démonstration est illisible : supprimez le dossier pki et relancez.")
    out: dict = {"conf": str(conf), "module": module, "ca": str(pki_dir / "ca.pem"), "officials": {},
                 "seal": None, "created": [], "reused": []}
    for oid, name, role in officials:
        info, created = _provision_one(directory, conf, oid, name, role, ca, module)
        out["officials"][oid] = info
        out["created" if created else "reused"].append(oid)
    if seal:
        info, created = _provision_one(directory, conf, SEAL_ID, f"Cachet serveur — {seal}", None, ca, module, seal_of=seal)
        out["seal"] = info
        out["created" if created else "reused"].append(SEAL_ID)
    return out


def token_config(info: dict) -> TokenConfig:
    """The TokenConfig of a provisioned token (an entry of provision_tokens' result)."""
    return TokenConfig(label=info["label"], module=info["module"], key_label=info["key_label"],
                       softhsm_conf=info["softhsm_conf"])


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.signature.softhsm DIR --official id:Nom:Rôle ... [--seal NOM]`: provision and
    tell each official their token's label and PIN (shown on a terminal only, like the demo passwords)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m flows.signature.softhsm", description="Supports SoftHSM2 de démonstration")
    ap.add_argument("directory")
    ap.add_argument("--official", action="append", default=[], help="id:Nom:Rôle (répétable)")
    ap.add_argument("--seal", help="titulaire du cachet serveur (collectivité ou opérateur)")
    args = ap.parse_args(argv)
    officials = []
    for spec in args.official:
        parts = spec.split(":", 2)
        if len(parts) != 3:
            print(f"--official attend id:Nom:Rôle, lu « {spec} »", file=sys.stderr)
            return 2
        officials.append((parts[0], parts[1], parts[2]))
    out = provision_tokens(args.directory, officials, seal=args.seal)
    on_terminal = sys.stdout.isatty()  # never copy a PIN into a log file
    for info in [*out["officials"].values(), *([out["seal"]] if out["seal"] else [])]:
        pin = Path(info["pin_file"]).read_text().strip() if on_terminal else f"(voir {info['pin_file']})"
        print(f"{info['name']} : support « {info['label']} », code PIN {pin}")
    print(f"SOFTHSM2_CONF={out['conf']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
