"""Send alert digests through Airflow's SMTP notifier, on an Airflow SMTP Connection.

The Connection holds the relay, its credentials and the default sender (`extra.from_email`); demat
never logs it. Set `extra.retry_limit` to 0: demat retries a failed digest itself, and a blind
resend inside the hook after a lost reply would deliver the same mail twice.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flows.alerts.send import OutgoingMail

DEFAULT_CONN_ID = "demat_smtp"


def smtp_conn_id() -> str:
    return os.environ.get("DEMAT_SMTP_CONN_ID", DEFAULT_CONN_ID)


def smtp_configured(conn_id: str | None = None) -> bool:
    """Whether the SMTP Connection exists (a deployment without mail keeps its alerts pending)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id or smtp_conn_id())
    except AirflowNotFoundException:
        return False
    return True


class AirflowSmtpMailer:
    """A `flows.alerts.send.Mailer` built on `SmtpNotifier`: returns once the server accepted the mail."""

    def __init__(self, conn_id: str | None = None, sender: str | None = None):
        self.conn_id = conn_id or smtp_conn_id()
        self.sender = sender  # None: the Connection's from_email

    def send(self, mail: OutgoingMail) -> None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        notifier = SmtpNotifier(to=[mail.to], from_email=self.sender, subject=mail.subject,
                                html_content=mail.html, smtp_conn_id=self.conn_id, custom_headers=mail.headers)
        # notify() directly, not the notifier's __call__: our text is data, never a Jinja template
        notifier.notify({})
