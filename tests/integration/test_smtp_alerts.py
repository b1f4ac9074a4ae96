"""Alert digests through Airflow's SmtpNotifier to the real aiosmtpd sink on loopback.

Real PostgreSQL, real journal, real SMTP conversation: the mails are read back from the sink's
folder. Covers the one-digest-per-hour rule, a recipient without address, and the SMTP server
down (stopped, or answering 421): never marked sent, retried after a backoff, never lost.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from sqlalchemy import select

from demat_airflow.mailer import AirflowSmtpMailer
from flows.alerts.models import Alert, AlertDelivery, AlertDigest
from flows.alerts.record import record_all
from flows.alerts.send import send_due
from flows.dossier import service
from flows.dossier.db import session_scope
from flows.settings import REPO, Settings
from simulators.smtpsink import SmtpSink, read_mails

pytestmark = pytest.mark.integration

DEMO = REPO / "flows" / "config" / "demo.yaml"
AGENT = "agent@saint-sever.example"
CONTACT = "secretariat@saint-sever.example"
_n = itertools.count(1)


@pytest.fixture
def sink(tmp_path, monkeypatch):
    """The sink, and the Airflow Connection `demat_smtp` pointing at it (as the embedded platform writes it)."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    with SmtpSink(tmp_path / "mails") as s:
        monkeypatch.setenv("AIRFLOW_CONN_DEMAT_SMTP", json.dumps({
            "conn_type": "smtp", "host": s.host, "port": s.port,
            "extra": {"from_email": "demat <alertes@demat.localhost>", "disable_ssl": True, "disable_tls": True,
                      "timeout": 5, "retry_limit": 0},
        }))
        yield s


def _settings(tmp_path, url, edit=None, name="config.yaml") -> Settings:
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    if edit:
        edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return Settings(state_dir=tmp_path, config_path=path, database_url=url, store_root=str(tmp_path / "store"),
                    inbox_root=tmp_path / "inbox", pki_dir=tmp_path / "pki", reference_dir=tmp_path,
                    public_url="https://demat.example.fr")


def _refused(url: str, name: str) -> str:
    with session_scope(url) as s:
        d = service.create(s, collectivite="saint-sever", flow="helios", original_name=name,
                           sha256=hashlib.sha256(f"alerte-{next(_n)}".encode()).hexdigest(), size=10)
        service.transition(s, d, "refuse_validation", message=f"Document refusé : 1 erreur(s). TIERS-IBAN ({name})")
        return d.id


def _to(mails, address: str):
    return [m for m in mails if m["To"] == address]


def _html(mail) -> str:
    return mail.get_body(preferencelist=("html",)).get_content()


def test_one_digest_per_recipient_per_hour_through_the_smtp_notifier(tmp_path, demat_db, sink):
    settings = _settings(tmp_path, demat_db)
    first = [_refused(demat_db, f"pes-{i}.xml") for i in range(3)]
    assert record_all(settings, certificates=False)["refus"] == 3
    t0 = datetime.now(UTC)
    report = send_due(settings, AirflowSmtpMailer(), now=t0)
    assert len(report.sent) == 2 and report.failed == {}  # the agent and the collectivité's contact

    mails = read_mails(sink.folder)
    assert sorted(m["To"] for m in mails) == [AGENT, CONTACT]
    (mail,) = _to(mails, AGENT)
    assert mail["Subject"] == "demat : 3 alertes pour Commune de Saint-Sever"
    assert mail["From"] == "demat <alertes@demat.localhost>"
    assert mail["Auto-Submitted"] == "auto-generated" and mail["Message-ID"].startswith("<demat-alertes-")
    assert mail["X-Sink-Rcpt-To"] == f"<{AGENT}>"
    body = _html(mail)
    for i, dossier_id in enumerate(first):
        assert f"Dossier {dossier_id} : Refusé à la validation" in body
        assert f'href="https://demat.example.fr/demat/dossiers/{dossier_id}"' in body
        assert f"« pes-{i}.xml »" in body
    assert "Que faire :" in body and "TIERS-IBAN" in body

    late = _refused(demat_db, "pes-tardif.xml")  # within the hour: held, not a second mail
    record_all(settings, certificates=False)
    held = send_due(settings, AirflowSmtpMailer(), now=t0 + timedelta(minutes=10))
    assert held.sent == [] and set(held.held) == {AGENT, CONTACT}
    assert held.held[AGENT] == t0 + timedelta(hours=1)
    assert len(read_mails(sink.folder)) == 2

    after = send_due(settings, AirflowSmtpMailer(), now=t0 + timedelta(minutes=61))
    assert len(after.sent) == 2
    (second,) = _to(read_mails(sink.folder)[2:], AGENT)
    assert second["Subject"] == "demat : 1 alerte pour Commune de Saint-Sever"
    assert late in _html(second) and first[0] not in _html(second)
    with session_scope(demat_db) as s:
        assert all(a.sent_at is not None for a in s.execute(select(Alert)).scalars())
        assert s.execute(select(AlertDelivery).where(AlertDelivery.sent_at.is_(None))).first() is None


def test_recipient_without_address_is_kept_pending_with_a_french_reason(tmp_path, demat_db, sink, caplog):
    def no_agent_address(data):
        data["collectivites"][0]["emails"] = {}

    settings = _settings(tmp_path, demat_db, no_agent_address)
    dossier_id = _refused(demat_db, "pes-sans-adresse.xml")
    record_all(settings, certificates=False)
    with caplog.at_level(logging.WARNING, logger="flows.alerts.send"):
        report = send_due(settings, AirflowSmtpMailer())
    assert report.unaddressed == 1 and len(report.sent) == 1
    assert [m["To"] for m in read_mails(sink.folder)] == [CONTACT]  # the others are not held back
    reason = "aucune adresse e-mail connue pour l'utilisateur « agent.saintsever »"
    assert reason in caplog.text
    with session_scope(demat_db) as s:
        pending = s.execute(select(AlertDelivery).where(AlertDelivery.recipient == "agent.saintsever")).scalar_one()
        assert pending.sent_at is None and pending.digest_id is None and reason in pending.note
        assert s.execute(select(Alert)).scalar_one().sent_at is None  # not everyone was told yet
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flows.alerts.send"):
        send_due(settings, AirflowSmtpMailer())
    assert reason not in caplog.text  # logged once, not at every run

    fixed = _settings(tmp_path, demat_db, name="fixed.yaml")  # the operator adds the address
    assert len(send_due(fixed, AirflowSmtpMailer()).sent) == 1
    (mail,) = _to(read_mails(sink.folder), AGENT)
    assert dossier_id in _html(mail)
    with session_scope(demat_db) as s:
        assert s.execute(select(Alert)).scalar_one().sent_at is not None


def test_smtp_down_is_never_marked_sent_and_is_retried(tmp_path, demat_db, sink):
    settings = _settings(tmp_path, demat_db)
    port = sink.port
    sink.stop()
    _refused(demat_db, "pes-panne.xml")
    record_all(settings, certificates=False)
    t0 = datetime.now(UTC)
    down = send_due(settings, AirflowSmtpMailer(), now=t0)
    assert down.sent == [] and len(down.failed) == 2
    assert all("le serveur SMTP refuse la connexion" in r for r in down.failed.values())
    with session_scope(demat_db) as s:
        digests = s.execute(select(AlertDigest)).scalars().all()
        assert [(d.sent_at, d.attempts) for d in digests] == [(None, 1), (None, 1)]
        assert "refuse la connexion" in digests[0].last_error
        assert s.execute(select(Alert)).scalar_one().sent_at is None
    assert send_due(settings, AirflowSmtpMailer(), now=t0 + timedelta(seconds=30)).failed == {}  # backoff: 1 min

    with SmtpSink(sink.folder, port=port) as again:
        (again.folder / "DOWN").touch()  # up, but answering 421 to every mail
        busy = send_due(settings, AirflowSmtpMailer(), now=t0 + timedelta(minutes=2))
        assert len(busy.failed) == 2 and all("a répondu 421" in r for r in busy.failed.values())
        assert read_mails(again.folder) == []
        (again.folder / "DOWN").unlink()
        assert send_due(settings, AirflowSmtpMailer(), now=t0 + timedelta(minutes=3)).sent == []  # backoff: 2 min
        ok = send_due(settings, AirflowSmtpMailer(), now=t0 + timedelta(minutes=5))
        assert len(ok.sent) == 2
    mails = read_mails(sink.folder)
    assert sorted(m["To"] for m in mails) == [AGENT, CONTACT]  # each digest once, none lost
    assert sorted(int(m["X-Demat-Digest"]) for m in mails) == sorted(ok.sent)
    with session_scope(demat_db) as s:
        assert [d.attempts for d in s.execute(select(AlertDigest).order_by(AlertDigest.id)).scalars()] == [2, 2]
        assert s.execute(select(Alert)).scalar_one().sent_at is not None


class _CrashAfterSending(AirflowSmtpMailer):
    """The worker dies right after the server accepted the mail, before demat records it."""

    def send(self, mail) -> None:
        super().send(mail)
        raise SystemExit("arrêt brutal du worker")


def test_crash_between_acceptance_and_mark_resends_that_digest_once(tmp_path, demat_db, sink):
    def agent_only(data):
        data["collectivites"][0].pop("email")

    settings = _settings(tmp_path, demat_db, agent_only)
    _refused(demat_db, "pes-crash.xml")
    record_all(settings, certificates=False)
    t0 = datetime.now(UTC)
    with pytest.raises(SystemExit):
        send_due(settings, _CrashAfterSending(), now=t0)
    assert send_due(settings, AirflowSmtpMailer(), now=t0 + timedelta(minutes=1)).sent  # resent: not lost
    assert send_due(settings, AirflowSmtpMailer(), now=t0 + timedelta(hours=2)).sent == []  # and only once
    copies = _to(read_mails(sink.folder), AGENT)
    assert len(copies) == 2 and copies[0]["Message-ID"] == copies[1]["Message-ID"]  # a mail system may drop the copy


def test_simulators_command_starts_the_sink_and_the_platform_points_demat_smtp_at_it(tmp_path):
    """`python -m simulators --mail-dir` as the embedded platform starts it; its Connection reaches the sink."""
    import signal
    import smtplib
    import subprocess
    import sys
    import time

    from embedded.platform import Layout, airflow_env, read_endpoints, read_smtp

    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "--state", str(state), "--mail-dir",
                             str(state / "mails")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        path = state / "simulators" / "endpoints.json"
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert path.exists(), proc.stdout.read().decode() if proc.poll() is not None else "pas de endpoints.json"
        layout = Layout(state)
        layout.config.write_text(DEMO.read_text(encoding="utf-8"), encoding="utf-8")  # as prepare_state does
        assert set(read_endpoints(layout)) == {"prefecture", "dgfip", "sae"}  # the SFTP Connections only
        smtp = read_smtp(layout)
        assert smtp["host"] == "127.0.0.1" and smtp["mail_dir"] == str((state / "mails").resolve())

        class _Pg:  # airflow_env only asks the database for URLs
            def url(self, name: str) -> str:
                return f"postgresql://127.0.0.1:1/{name}"

        secrets_ = {"fernet_key": "k", "jwt_secret": "j", "api_secret": "a"}
        env = airflow_env(layout, _Pg(), secrets_, 8080, read_endpoints(layout), smtp)
        conn = json.loads(env["AIRFLOW_CONN_DEMAT_SMTP"])
        assert conn["conn_type"] == "smtp" and conn["port"] == smtp["port"] and conn["extra"]["retry_limit"] == 0
        with smtplib.SMTP(conn["host"], conn["port"], timeout=5) as client:
            client.sendmail("alertes@demat.localhost", [AGENT], "Subject: essai\r\n\r\nbonjour\r\n")
        (mail,) = read_mails(state / "mails")
        assert mail["Subject"] == "essai" and mail["X-Sink-Rcpt-To"] == f"<{AGENT}>"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()
    assert "puits SMTP : smtp://127.0.0.1:" in out.decode()
