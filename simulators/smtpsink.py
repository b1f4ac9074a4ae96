"""An SMTP sink on loopback (aiosmtpd): accepts every mail and keeps it as a `.eml` file.

Stands in for the operator's mail relay, so tests and operators can read the alerts demat sends.
Layout (maildir-like): each mail is written under `tmp/` then renamed into `new/`, so a reader never
sees a half-written file. A `DOWN` file in the folder makes the sink answer 421 (service
unavailable) to every mail, to try demat's retries; remove it to resume.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from aiosmtpd.controller import Controller

log = logging.getLogger("simulators.smtp")

_counter = itertools.count(1)


class _Store:
    """aiosmtpd handler: one `.eml` per accepted mail, envelope kept in two headers on top."""

    def __init__(self, folder: Path):
        self.folder = folder

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd hook name
        if (self.folder / "DOWN").exists():
            return "421 4.3.2 Service indisponible (simulateur arrêté par le fichier DOWN)"
        head = (f"X-Sink-Mail-From: <{envelope.mail_from}>\r\n"
                f"X-Sink-Rcpt-To: {', '.join(f'<{r}>' for r in envelope.rcpt_tos)}\r\n").encode()
        data = envelope.original_content or envelope.content
        name = f"{time.time_ns()}.{os.getpid()}_{next(_counter)}.eml"
        tmp = self.folder / "tmp" / name
        with open(tmp, "wb") as fh:
            fh.write(head + data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / "new" / name)
        log.info("courriel reçu pour %s (%d octets) : %s", ", ".join(envelope.rcpt_tos), len(data), name)
        return "250 2.0.0 Message accepté"


class _Controller(Controller):
    """aiosmtpd's controller, accepting port 0 (a free port, read back once bound)."""

    def _trigger_server(self) -> None:
        if not self.port and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpSink:
    """start() / stop(), or a context manager; `port` is known once started."""

    def __init__(self, folder: str | Path, *, host: str = "127.0.0.1", port: int = 0):
        self.folder = Path(folder)
        for sub in ("tmp", "new"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.host = host
        self._controller = _Controller(_Store(self.folder), hostname=host, port=port,
                                       server_hostname="demat-smtp-sink", data_size_limit=10 * 1024 * 1024)

    @property
    def port(self) -> int:
        return self._controller.port

    def start(self) -> SmtpSink:
        self._controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        """Idempotent: a test may stop the sink to play an outage, then leave its context."""
        if getattr(self, "_running", False):
            self._controller.stop()
            self._running = False

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def endpoint(self) -> dict:
        """What endpoints.json says about the sink (no secret: no authentication on loopback)."""
        return {"kind": "smtp", "host": self.host, "port": self.port, "mail_dir": str(self.folder.resolve())}


def read_mails(folder: str | Path) -> list[EmailMessage]:
    """Every mail the sink kept, oldest first."""
    new = Path(folder) / "new"
    paths = sorted(new.glob("*.eml")) if new.is_dir() else []  # names start with the arrival time
    return [BytesParser(policy=policy.default).parsebytes(p.read_bytes()) for p in paths]
