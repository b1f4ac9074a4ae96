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
    reference_dir: Path
    public_url: str = ""  # where agents open the UI (links in alert mails); "" : http://127.0.0.1:8080

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
            reference_dir=Path(os.environ.get("DEMAT_REFERENCE_DIR", REPO.parent / "shared" / "reference")),
            public_url=os.environ.get("DEMAT_PUBLIC_URL") or os.environ.get("AIRFLOW__API__BASE_URL", ""),
        )

    @cached_property
    def config(self) -> PlatformConfig:
        return load_config(self.config_path)

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "work"
