"""End to end: an invalid PES dropped in an inbox is refused, and the agent gets the mail.

The running platform's `demat_alerts` DAG records the refusal and sends the digest through the
`demat_smtp` Connection to the simulators' SMTP sink, whose folder the test reads. The digest rule
(one per address per hour) is shared by the whole session: the test picks a collectivité whose
agent got no digest in the last hour; if every one did, the hold itself is what it checks.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from flows.alerts.models import Alert, AlertDelivery, AlertDigest
from flows.config import load_config
from flows.dossier import service
from flows.dossier.db import session_scope
from simulators.smtpsink import read_mails

pytestmark = pytest.mark.e2e


def _last_digest(url: str, address: str) -> datetime | None:
    with session_scope(url) as s:
        last = s.execute(select(func.max(AlertDigest.sent_at)).where(AlertDigest.address == address)).scalar()
    return last if last is None or last.tzinfo else last.replace(tzinfo=UTC)


def test_refused_pes_reaches_the_agent_by_mail(platform):
    from flows.helios.generate import generate_pes

    config = load_config(platform.state / "config.yaml")
    url = platform.database_url
    hour_ago = datetime.now(UTC) - timedelta(minutes=config.alerts.digest_minutes)
    candidates = [(c, c.emails[c.agents[0]]) for c in config.collectivites if c.agents and c.agents[0] in c.emails]
    free = [(c, a) for c, a in candidates if (_last_digest(url, a) or hour_ago) <= hour_ago]
    coll, address = (free or candidates)[0]
    stamp = datetime.now(UTC).strftime("%H%M%S%f")
    bad = generate_pes(siret=coll.siret, idpost=coll.helios.idpost, codcol=coll.helios.codcol,
                       codbud=coll.helios.codbud, nomfic=f"PES_ALERTE_{stamp}", defects=("bad_iban",))
    sha = platform.drop(coll.slug, "helios", f"pes-alerte-{stamp}.xml", bad)

    deadline = time.monotonic() + 420
    dossier_id = mail = None
    while time.monotonic() < deadline and mail is None:
        if dossier_id is None:
            with session_scope(url) as s:
                d = service.by_sha(s, sha)
                dossier_id = d.id if d is not None and d.state == "refuse_validation" else None
        if dossier_id:
            with session_scope(url) as s:
                pending = s.execute(select(AlertDelivery).join(Alert).where(
                    Alert.dossier_id == dossier_id, AlertDelivery.recipient == coll.agents[0])).scalar_one_or_none()
            last = _last_digest(url, address)
            told_recently = last is not None and last > datetime.now(UTC) - timedelta(minutes=config.alerts.digest_minutes)
            if pending is not None and pending.sent_at is None and (not free or told_recently):
                # this agent was told within the period (before the test, or by an earlier test's letter
                # alert sent meanwhile): the alert must wait, recorded, for the next digest
                assert pending.digest_id is None
                return
        if dossier_id:
            mail = next((m for m in read_mails(platform.state / "mails") if m["To"] == address
                         and dossier_id in m.get_body(preferencelist=("html",)).get_content()), None)
        time.sleep(3)
    assert dossier_id, f"the invalid PES was not refused in time (sha {sha[:8]})"
    assert mail is not None, f"no alert mail for {dossier_id} to {address} in {platform.state / 'mails'}"
    assert mail["Subject"].startswith("demat : ") and coll.name in mail["Subject"]
    body = mail.get_body(preferencelist=("html",)).get_content()
    assert "Refusé à la validation" in body and "IBAN" in body and "Que faire" in body
    assert f'href="{platform.base_url}/demat/dossiers/{dossier_id}"' in body
    with session_scope(url) as s:
        alert = s.execute(select(Alert).where(Alert.dossier_id == dossier_id, Alert.kind == "refus")).scalar_one()
        assert coll.agents[0] in alert.recipients
