"""A real clamd for tests: its own socket and signature database in a temp dir, no freshclam.

The database holds only signatures written here: EICAR (by hash and by body, so that it is found
inside a ZIP as well) and a custom one, "Demat.Test.Marqueur", matching CUSTOM_MARKER.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
CUSTOM_MARKER = b"DEMAT-TEST-VIRUS-MARQUEUR-7f3a91c2"
CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"


def available() -> bool:
    return Path(CLAMD).is_file()


def write_database(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demat-test.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Demat.Test.EICAR\n")
    (folder / "demat-test.ndb").write_text(
        f"Demat.Test.EICAR.Corps:0:*:{EICAR.hex()}\n"
        f"Demat.Test.Marqueur:0:*:{CUSTOM_MARKER.hex()}\n")


class Clamd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "clamd.sock"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Clamd:
        db, tmp = self.root / "db", self.root / "tmp"
        write_database(db)
        tmp.mkdir(parents=True, exist_ok=True)
        conf = self.root / "clamd.conf"
        conf.write_text("\n".join([
            f"LocalSocket {self.socket}", f"DatabaseDirectory {db}", f"TemporaryDirectory {tmp}",
            f"LogFile {self.root / 'clamd.log'}", "Foreground yes", "StreamMaxLength 600M", "MaxFileSize 600M",
            "MaxScanSize 600M", "MaxThreads 2", "Bytecode no", "", ]))
        self.proc = subprocess.Popen([CLAMD, f"--config-file={conf}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        from flows.antivirus import Scanner

        deadline = time.monotonic() + timeout
        while not Scanner(str(self.socket), timeout=2).ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "clamd.log").read_text(errors="replace") if (self.root / "clamd.log").exists() else ""
                self.stop()
                raise RuntimeError(f"clamd n'a pas démarré : {log[-2000:]}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
