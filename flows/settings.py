"""Where demat finds its state: read from the environment (set by the launcher or the deployment)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from flows.config import PlatformConfig, load_config

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    config_path: Path
    database_url: str
    store_root: str
    inbox_root: Path
    pki_dir: Path
    reference_dir: Path | None  # official schemas named by DEMAT_REFERENCE_DIR; None: those shipped with demat
    public_url: str = ""  # where agents open the UI (links in alert mails); "" : http://127.0.0.1:8080
    # inbox: when is a dropped file complete? "inotify" (the writer closed it, or it was renamed in),
    # "poll" (unchanged for inbox_min_age seconds: network shares, whose remote writers raise no
    # event here) or "auto" (inotify on a local filesystem). Built directly (tests): the stability rule.
    inbox_events: str = "poll"
    inbox_min_age: float = 2.0
    inbox_safety_age: float = 600.0  # with events, the sweep's safety net takes only files this quiet

    @classmethod
    def from_env(cls) -> Settings:
        state = Path(os.environ.get("DEMAT_STATE", REPO / ".demat")).resolve()
        return cls(
            state_dir=state,
            config_path=Path(os.environ.get("DEMAT_CONFIG", REPO / "flows" / "config" / "demo.yaml")),
            database_url=os.environ.get("DEMAT_DATABASE_URL", ""),
            store_root=os.environ.get("DEMAT_STORE", str(state / "store")),
            inbox_root=Path(os.environ.get("DEMAT_INBOX", state / "inbox")),
            pki_dir=Path(os.environ.get("DEMAT_PKI", state / "pki")),
            reference_dir=Path(os.environ["DEMAT_REFERENCE_DIR"]) if os.environ.get("DEMAT_REFERENCE_DIR") else None,
            public_url=os.environ.get("DEMAT_PUBLIC_URL") or os.environ.get("AIRFLOW__API__BASE_URL", ""),
            inbox_events=os.environ.get("DEMAT_INBOX_EVENTS", "auto"),
            inbox_min_age=float(os.environ.get("DEMAT_INBOX_MIN_AGE", "2.0")),
            inbox_safety_age=float(os.environ.get("DEMAT_INBOX_SAFETY_AGE", "600")),
        )

    @cached_property
    def config(self) -> PlatformConfig:
        return load_config(self.config_path)

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "work"
