"""Antivirus: every file entering demat is scanned by ClamAV (clamd) before it is stored.

demat speaks clamd's INSTREAM protocol itself (a few lines over a unix socket, or TCP): the PyPI
clients are unmaintained (`clamd` 1.0.2 dates from 2014, `pyclamd` 0.4.0 from 2017) and the
protocol is tiny and stable (clamd(8): "zINSTREAM\\0", then chunks of <uint32 big-endian length>
<data>, a zero-length chunk ends the stream; the reply is "stream: OK" or "stream: <name> FOUND").

Three outcomes, and no fourth: clean (the file goes on), infected (the file is refused and kept
in quarantine, never in the artefact store) and unavailable (clamd down, timed out or answering
an error: the file waits, neither passed nor refused). When DEMAT_CLAMD_SOCKET is not set,
scanning is off, which is logged once and said by the README: files are then not scanned.

Configuration (environment): DEMAT_CLAMD_SOCKET (a unix socket path, or tcp://host:port),
DEMAT_CLAMD_TIMEOUT (seconds, default 60), DEMAT_QUARANTINE (default <DEMAT_STATE>/quarantine).
clamd's StreamMaxLength must be at least demat's biggest accepted file (512 Mio); below that,
clamd answers "size limit exceeded" and the file waits with that reason.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

CHUNK = 1 << 16
CLEAN, INFECTED, UNAVAILABLE, OFF = "sain", "infecte", "indisponible", "desactive"
_warned_off = False


class ScanUnavailable(RuntimeError):
    """clamd could not give a verdict: the file must wait (French message)."""


@dataclass(frozen=True)
class Verdict:
    status: str  # CLEAN, INFECTED, UNAVAILABLE or OFF
    signature: str = ""  # the name ClamAV gives to what it found (INFECTED)
    detail: str = ""  # why there is no verdict (UNAVAILABLE), in French

    @property
    def infected(self) -> bool:
        return self.status == INFECTED

    @property
    def waits(self) -> bool:
        return self.status == UNAVAILABLE


class Scanner:
    """One clamd, reached through its socket. Each scan opens its own connection (thread-safe)."""

    def __init__(self, address: str, *, timeout: float = 60.0) -> None:
        self.address, self.timeout = address, timeout

    def __repr__(self) -> str:
        return f"Scanner({self.address!r})"

    def _connect(self) -> socket.socket:
        if self.address.startswith("tcp://"):
            host, _, port = self.address[6:].rpartition(":")
            return socket.create_connection((host.strip("[]"), int(port)), timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.address)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _reply(sock: socket.socket) -> str:
        data = b""
        while not data.endswith(b"\0"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
            if len(data) > 65536:
                break
        return data.rstrip(b"\0\n").decode("utf-8", "replace")

    def ping(self) -> bool:
        try:
            with self._connect() as sock:
                sock.sendall(b"zPING\0")
                return self._reply(sock) == "PONG"
        except OSError:
            return False

    def scan_stream(self, stream: BinaryIO) -> Verdict:
        try:
            with self._connect() as sock:
                sock.sendall(b"zINSTREAM\0")
                while chunk := stream.read(CHUNK):
                    sock.sendall(struct.pack(">I", len(chunk)) + chunk)
                sock.sendall(struct.pack(">I", 0))
                answer = self._reply(sock)
        except (OSError, ValueError) as exc:  # refused, missing socket, timeout, reset (clamd closes on a limit)
            why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            return Verdict(UNAVAILABLE, detail=f"antivirus ClamAV injoignable ({why})")
        return parse_reply(answer)

    def scan_bytes(self, data: bytes) -> Verdict:
        import io

        return self.scan_stream(io.BytesIO(data))

    def scan_file(self, path: Path) -> Verdict:
        with open(path, "rb") as fh:
            return self.scan_stream(fh)


def parse_reply(answer: str) -> Verdict:
    """clamd's one-line answer to INSTREAM, as a verdict. Anything not understood is no verdict."""
    text = answer.strip()
    body = text.split(":", 1)[1].strip() if text.startswith("stream:") else text
    if body == "OK":
        return Verdict(CLEAN)
    if body.endswith(" FOUND"):
        return Verdict(INFECTED, signature=body[: -len(" FOUND")].strip()[:200] or "inconnu")
    if "size limit exceeded" in body:
        return Verdict(UNAVAILABLE, detail="le fichier dépasse la taille que clamd accepte (StreamMaxLength) : "
                                           "l'opérateur doit relever StreamMaxLength à 512M au moins")
    return Verdict(UNAVAILABLE, detail=f"réponse inattendue de l'antivirus ClamAV : « {body[:200] or 'vide'} »")


def scanner_from_env(environ=os.environ) -> Scanner | None:
    """The configured clamd, or None (scanning off, logged once)."""
    global _warned_off
    address = (environ.get("DEMAT_CLAMD_SOCKET") or "").strip()
    if not address:
        if not _warned_off:
            log.warning("Analyse antivirus désactivée : DEMAT_CLAMD_SOCKET n'est pas défini, les fichiers reçus "
                        "ne sont PAS analysés (voir README, « Antivirus »).")
            _warned_off = True
        return None
    return Scanner(address, timeout=float(environ.get("DEMAT_CLAMD_TIMEOUT") or 60))


def scan_path(path: Path, scanner: Scanner | None = None, *, environ=os.environ) -> Verdict:
    scanner = scanner if scanner is not None else scanner_from_env(environ)
    return Verdict(OFF) if scanner is None else scanner.scan_file(path)


def scan_bytes(data: bytes, scanner: Scanner | None = None, *, environ=os.environ) -> Verdict:
    scanner = scanner if scanner is not None else scanner_from_env(environ)
    return Verdict(OFF) if scanner is None else scanner.scan_bytes(data)


# --------------------------------------------------------------------------------------------- quarantine
def quarantine_root(state_dir: Path, environ=os.environ) -> Path:
    return Path(environ.get("DEMAT_QUARANTINE") or (state_dir / "quarantine"))


def refusal_text(shown: str, signature: str, kept_as: str) -> str:
    return (f"Fichier « {shown} » refusé : l'antivirus (ClamAV) y a détecté « {signature} ».\n"
            f"Il n'a pas été enregistré dans demat ; il est conservé en quarantaine sous le nom « {kept_as} » "
            "(l'opérateur seul y a accès).\n"
            "Correction : n'ouvrez pas ce fichier ; prévenez votre référent informatique pour qu'il analyse le poste "
            "qui l'a produit, puis déposez à nouveau un document sain (exporté de nouveau depuis le logiciel "
            "métier).\n")


def waiting_text(shown: str, detail: str) -> str:
    return (f"Fichier « {shown} » en attente : {detail}.\n"
            "Il n'est ni accepté ni refusé : demat l'analysera et le prendra en charge dès que l'antivirus répondra.\n"
            "Correction : aucune de votre part ; l'opérateur doit remettre en service clamd "
            "(variable DEMAT_CLAMD_SOCKET).\n")


def quarantine(root: Path, collectivite: str, flow: str, name: str, original: Path | bytes, *, shown: str,
               signature: str) -> tuple[Path, str]:
    """Keep an infected file out of the store: moved (a path) or written (bytes) into
    <root>/<collectivité>/<flux>/, readable by the operator only, its French explanation beside it.
    Returns the quarantined path and the explanation (for the agent's refusal)."""
    from flows.pipeline import inbox

    folder = root / inbox.stored_name(collectivite, 64) / inbox.stored_name(flow, 32)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)  # the operator only: an agent never re-downloads an infected file
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    target = folder / inbox.bounded(f"{stamp}_", name)
    if isinstance(original, Path):
        os.replace(original, target)
        os.chmod(target, 0o600)
    else:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(original)
    explanation = refusal_text(shown, signature, target.name)
    note = target.with_name(target.name + ".erreur.txt")
    note.write_text(explanation, encoding="utf-8")
    return target, explanation


# --------------------------------------------------------------------------------------------- embedded default
DEFAULT_DATABASE = Path("/var/lib/clamav")


def start_embedded_clamd(state_dir: Path, say=log.info, environ=os.environ):
    """`make run`: a clamd of its own (socket in the state folder) when clamav-daemon is installed
    and a signature database exists (DEMAT_CLAMAV_DB, else /var/lib/clamav filled by freshclam).
    Sets DEMAT_CLAMD_SOCKET in `environ` for the processes started after it. Returns the process,
    or None (said: without a database, ClamAV has nothing to scan with, so scanning stays off)."""
    import shutil
    import subprocess
    import time

    if environ.get("DEMAT_CLAMD_SOCKET"):
        say(f"Antivirus : clamd fourni par l'environnement ({environ['DEMAT_CLAMD_SOCKET']})")
        return None
    binary = shutil.which("clamd") or ("/usr/sbin/clamd" if Path("/usr/sbin/clamd").is_file() else None)
    if binary is None:
        say("Antivirus : clamav-daemon n'est pas installé, les fichiers reçus ne sont PAS analysés "
            "(apt-get install clamav-daemon, puis freshclam)")
        return None
    database = Path(environ.get("DEMAT_CLAMAV_DB") or DEFAULT_DATABASE)
    signatures = [p for p in database.glob("*") if p.suffix in {".cvd", ".cld", ".hdb", ".hsb", ".ndb", ".ldb",
                                                                 ".mdb", ".msb", ".cdb", ".yar", ".yara"}]
    if not signatures:
        say(f"Antivirus : aucune base de signatures dans {database} (freshclam ne l'a pas remplie) : ClamAV n'aurait "
            "rien pour analyser, les fichiers reçus ne sont PAS analysés")
        return None
    root = state_dir / "clamd"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock = root / "clamd.sock"
    conf = root / "clamd.conf"
    conf.write_text("\n".join([
        f"LocalSocket {sock}", "LocalSocketMode 600", f"DatabaseDirectory {database}", f"TemporaryDirectory {root}",
        f"LogFile {root / 'clamd.log'}", "Foreground yes", "StreamMaxLength 600M", "MaxFileSize 600M",
        "MaxScanSize 600M", "MaxThreads 4", ""]))
    proc = subprocess.Popen([binary, f"--config-file={conf}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120  # the full official database takes ~20 s and ~1 GiB to load
    while not Scanner(str(sock), timeout=2).ping():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            say(f"Antivirus : clamd n'a pas démarré (voir {root / 'clamd.log'}) : les fichiers reçus attendent "
                "l'antivirus")
            environ["DEMAT_CLAMD_SOCKET"] = str(sock)  # configured but down: files wait, they never pass
            return None
        time.sleep(0.3)
    environ["DEMAT_CLAMD_SOCKET"] = str(sock)
    say(f"Antivirus : clamd sur {sock} (base {database})")
    return proc
