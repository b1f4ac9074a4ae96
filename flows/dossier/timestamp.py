"""RFC 3161 timestamps for journal entries: proof that an entry existed at a given time.

The journal is a hash chain, so a token on one entry's hash proves every entry before it too:
each pass sends the newest entry's hash to a time-stamping authority (TSA) and stores the signed
token in `journal_timestamp` (one row per pass, on its anchor entry). Stamping is decoupled from
writing the journal: entries are written at once and covered by the next pass, so a TSA that is
down only delays the proof and never blocks a dossier.

- `LocalTsa`: the embedded default, OpenSSL's `ts` command with a TSA certificate generated at
  set-up (extendedKeyUsage critical timeStamping, issued by a local root).
- `HttpTsa`: a configured TSA URL (production), RFC 3161 over HTTP.
- `verify_token` / `verify_timestamps`: `openssl ts -verify` against the recomputed anchor hash,
  so a modified row (even with the chain's stored hashes rewritten after it) is caught.

Until the journal table gains a token column, tokens live in their own table, defined here on
demat's declarative Base (so `create_schema` creates it once this module is imported).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil

# subprocess: fixed argument lists to the openssl binary, never a shell
import subprocess  # nosec B404
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from flows.dossier.journal import entry_hash
from flows.dossier.models import Base, JournalEntry

TIMEOUT = 30
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class JournalTimestamp(Base):
    """The RFC 3161 token of one journal entry (DER TimeStampToken over the entry's sha256)."""

    __tablename__ = "journal_timestamp"

    entry_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), ForeignKey("journal.id"),
                                          primary_key=True)
    token: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # genTime from the token
    tsa: Mapped[str] = mapped_column(String(255), default="")


def ensure_table(bind) -> None:
    JournalTimestamp.__table__.create(bind, checkfirst=True)


class TsaUnavailable(RuntimeError):
    """The TSA cannot answer now (down, unreachable, refusing): the entries wait. French message."""


class TimestampError(ValueError):
    """A token or a reply that is not a valid timestamp. French message."""


class Tsa(Protocol):
    name: str

    def timestamp(self, digest_hex: str) -> bytes:
        """The DER TimeStampToken over a sha256 digest (hex). Raises TsaUnavailable."""
        ...


def _openssl() -> str:
    exe = shutil.which("openssl")
    if exe is None:
        raise TsaUnavailable("la commande openssl est introuvable : horodatage impossible pour l'instant")
    return exe


def _run(args: list[str], *, what: str, unavailable: bool = False) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run([_openssl(), *args], capture_output=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TsaUnavailable(f"{what} : openssl n'a pas répondu ({exc.__class__.__name__})") from None
    if p.returncode != 0:
        detail = p.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        cls = TsaUnavailable if unavailable else TimestampError
        raise cls(f"{what} : échec d'openssl ({detail[0][:200]})")
    return p


def _check_digest(digest_hex: str) -> str:
    digest_hex = digest_hex.lower()
    if not _HEX64.match(digest_hex):
        raise TimestampError(f"empreinte sha256 attendue (64 caractères hexadécimaux), reçu « {digest_hex[:80]} »")
    return digest_hex


def make_query(digest_hex: str) -> bytes:
    """A DER TimeStampReq for a sha256 digest, asking for the TSA certificate in the token."""
    p = _run(["ts", "-query", "-digest", _check_digest(digest_hex), "-sha256", "-cert"], what="requête d'horodatage")
    return p.stdout


def token_from_reply(reply: bytes) -> bytes:
    """The TimeStampToken of a granted TimeStampResp; TsaUnavailable if the TSA refused."""
    with tempfile.TemporaryDirectory(prefix="demat-ts-") as tmp:
        resp = Path(tmp) / "resp.tsr"
        resp.write_bytes(reply)
        text = _run(["ts", "-reply", "-in", str(resp), "-text"], what="réponse de l'autorité d'horodatage").stdout
        status = re.search(rb"Status: (\w+)", text)
        if status is None or status.group(1) not in (b"Granted", b"Granted."):
            why = status.group(1).decode() if status else "illisible"
            raise TsaUnavailable(f"l'autorité d'horodatage a refusé la demande (statut : {why})")
        return _run(["ts", "-reply", "-in", str(resp), "-token_out"], what="jeton d'horodatage").stdout


def token_time(token: bytes) -> datetime:
    """genTime of a token."""
    with tempfile.TemporaryDirectory(prefix="demat-ts-") as tmp:
        path = Path(tmp) / "token.der"
        path.write_bytes(token)
        text = _run(["ts", "-reply", "-in", str(path), "-token_in", "-text", "-token_out"],
                    what="lecture du jeton d'horodatage").stdout.decode("utf-8", "replace")
    m = re.search(r"Time stamp: (\w{3}\s+\d+ \d\d:\d\d:\d\d(?:\.\d+)? \d{4}) GMT", text)
    if m is None:
        raise TimestampError("jeton d'horodatage sans date lisible")
    raw = re.sub(r"\s+", " ", m.group(1))
    fmt = "%b %d %H:%M:%S.%f %Y" if "." in raw else "%b %d %H:%M:%S %Y"
    return datetime.strptime(raw, fmt).replace(tzinfo=UTC)


@dataclass
class TokenCheck:
    ok: bool
    at: datetime | None = None
    reason: str = ""


def verify_token(token: bytes, digest_hex: str, *, ca_file: str | Path, untrusted: str | Path | None = None) -> TokenCheck:
    """`openssl ts -verify`: the token is signed by a TSA chaining to ca_file and covers digest_hex."""
    try:
        digest_hex = _check_digest(digest_hex)
    except TimestampError as exc:
        return TokenCheck(False, reason=str(exc))
    with tempfile.TemporaryDirectory(prefix="demat-ts-") as tmp:
        path = Path(tmp) / "token.der"
        path.write_bytes(token)
        args = ["ts", "-verify", "-digest", digest_hex, "-in", str(path), "-token_in", "-CAfile", str(ca_file)]
        if untrusted:
            args += ["-untrusted", str(untrusted)]
        try:
            _run(args, what="vérification du jeton")
        except (TimestampError, TsaUnavailable) as exc:
            return TokenCheck(False, reason=f"jeton d'horodatage invalide pour cette entrée ({exc})")
        try:
            at = token_time(token)
        except TimestampError as exc:
            return TokenCheck(False, reason=str(exc))
    return TokenCheck(True, at)


# ----------------------------------------------------------------------------------------- TSAs

_TSA_CONF = """\
[ tsa ]
default_tsa = demat_tsa

[ demat_tsa ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/tsa.pem
signer_key = $dir/tsa-key.pem
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


class LocalTsa:
    """A TSA on this machine with OpenSSL's `ts` (embedded default and tests).

    `LocalTsa.create(directory)` generates a root and a TSA certificate (extendedKeyUsage
    critical timeStamping); the TSA key stays in `directory` with mode 0600.
    """

    name = "tsa-locale-openssl"

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / "tsa.cnf").exists():
            raise TsaUnavailable(f"autorité d'horodatage locale non initialisée dans {self.directory}")

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def cert_file(self) -> Path:
        return self.directory / "tsa.pem"

    @classmethod
    def create(cls, directory: str | Path, *, years: int = 10) -> LocalTsa:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        from flows.signature.pki import make_certificate, new_rsa_key, write_private

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        if (directory / "tsa.cnf").exists():
            return cls(directory)
        ca_key, ca_cert = make_certificate("Racine d'horodatage démo demat", is_ca=True, days=365 * years)
        key = new_rsa_key(2048)
        now = datetime.now(UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "demat démonstration"),
                             x509.NameAttribute(NameOID.COMMON_NAME, "Autorité d'horodatage démo demat")])
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=365 * years - 1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        write_private(directory / "tsa-key.pem", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                                   serialization.NoEncryption()))
        (directory / "tsa.pem").write_bytes(cert.public_bytes(pem))
        (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
        (directory / "serial").write_text("01\n")
        (directory / "tsa.cnf").write_text(_TSA_CONF.format(dir=str(directory)))
        return cls(directory)

    def reply(self, query: bytes) -> bytes:
        """Answer a DER TimeStampReq with a DER TimeStampResp (serial file updated under a lock)."""
        with tempfile.TemporaryDirectory(prefix="demat-tsa-") as tmp, open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            q = Path(tmp) / "req.tsq"
            q.write_bytes(query)
            p = _run(["ts", "-reply", "-config", str(self.directory / "tsa.cnf"), "-queryfile", str(q)],
                     what="autorité d'horodatage locale", unavailable=True)
        return p.stdout

    def timestamp(self, digest_hex: str) -> bytes:
        return token_from_reply(self.reply(make_query(digest_hex)))


class HttpTsa:
    """A TSA reached over HTTP (RFC 3161 §3.4): production, a configured URL."""

    def __init__(self, url: str, *, timeout: float = 10, name: str | None = None):
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"URL d'autorité d'horodatage invalide : « {url} » (http:// ou https:// attendu)")
        self.url = url
        self.timeout = timeout
        self.name = name or url

    def timestamp(self, digest_hex: str) -> bytes:
        import requests

        query = make_query(digest_hex)
        try:
            r = requests.post(self.url, data=query, timeout=self.timeout,
                              headers={"Content-Type": "application/timestamp-query"})
        except requests.RequestException as exc:
            raise TsaUnavailable(f"autorité d'horodatage {self.url} injoignable ({exc.__class__.__name__}) : "
                                 "les entrées seront horodatées plus tard") from None
        if r.status_code != 200:
            raise TsaUnavailable(f"autorité d'horodatage {self.url} : réponse HTTP {r.status_code}")
        return token_from_reply(r.content)


# ----------------------------------------------------------------------------------------- journal


@dataclass
class StampResult:
    stamped: int
    waiting: int
    reason: str = ""  # French, why entries still wait (TSA down...)


def _last_anchor(session: Session) -> int:
    return session.scalar(select(func.max(JournalTimestamp.entry_id))) or 0


def _entries_between(session: Session, after: int, upto: int | None = None) -> int:
    stmt = select(func.count()).select_from(JournalEntry).where(JournalEntry.id > after)
    if upto is not None:
        stmt = stmt.where(JournalEntry.id <= upto)
    return session.scalar(stmt) or 0


def pending(session: Session) -> int:
    """How many journal entries no token covers yet."""
    return _entries_between(session, _last_anchor(session))


def stamp_pending(session: Session, tsa: Tsa) -> StampResult:
    """One token on the journal's newest entry; the hash chain makes it cover every entry before it.

    One TSA request per pass, whatever the number of new entries (a token per entry cost one
    `openssl ts` process, or one HTTP request, per entry: about 1.5 CPU-s per dossier here).
    """
    last = _last_anchor(session)
    head = session.scalars(select(JournalEntry).order_by(JournalEntry.id.desc()).limit(1)).first()
    if head is None or head.id <= last:
        return StampResult(0, 0)
    try:
        token = tsa.timestamp(head.hash)
    except TsaUnavailable as exc:
        return StampResult(0, _entries_between(session, last), f"Horodatage en attente : {exc}")
    session.add(JournalTimestamp(entry_id=head.id, token=token, at=token_time(token), tsa=tsa.name))
    session.flush()
    return StampResult(_entries_between(session, last, head.id), _entries_between(session, head.id))


@dataclass
class TimestampCheck:
    ok: bool
    stamped: int
    unstamped: int
    first_bad_id: int | None = None
    reason: str = ""


def verify_timestamps(session: Session, *, ca_file: str | Path, untrusted: str | Path | None = None) -> TimestampCheck:
    """Every token must cover its anchor entry's recomputed hash; with the chain (checked by
    `verify_chain`) each anchor vouches for every entry up to it. Stops at the first bad one."""
    rows = session.execute(
        select(JournalTimestamp, JournalEntry).join(JournalEntry, JournalEntry.id == JournalTimestamp.entry_id)
        .order_by(JournalTimestamp.entry_id)
    ).all()
    covered, previous = 0, 0
    for ts, entry in rows:
        check = verify_token(ts.token, entry_hash(entry), ca_file=ca_file, untrusted=untrusted)
        if not check.ok:
            return TimestampCheck(False, covered, _entries_between(session, previous), entry.id,
                                  f"les entrées {previous + 1} à {entry.id} ne correspondent plus à leur "
                                  f"horodatage : {check.reason}")
        covered += _entries_between(session, previous, entry.id)
        previous = entry.id
    return TimestampCheck(True, covered, _entries_between(session, previous))


def tsa_for(state_dir: str | Path) -> Tsa:
    """The platform's TSA: DEMAT_TSA_URL (production, RFC 3161 over HTTP), else the local one
    created at set-up in <state>/tsa."""
    url = os.environ.get("DEMAT_TSA_URL", "").strip()
    return HttpTsa(url) if url else LocalTsa(Path(state_dir) / "tsa")


def stamp_journal(database_url: str, state_dir: str | Path) -> StampResult:
    """Stamp what the journal gained since the last pass (idempotent; a TSA outage only delays)."""
    from flows.dossier.db import session_scope

    with session_scope(database_url) as session:
        try:
            tsa = tsa_for(state_dir)
        except TsaUnavailable as exc:  # not set up here: say so, the entries wait
            return StampResult(0, pending(session), f"Horodatage en attente : {exc}")
        return stamp_pending(session, tsa)
