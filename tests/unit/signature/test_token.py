"""PKCS#11 signing on real SoftHSM2 tokens: one login per batch, wrong PIN, removal, provisioning, seal."""

from __future__ import annotations

import hashlib
import shutil
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from flows.actes.pdf import minimal_pdf
from flows.signature import token as tok
from flows.signature.certs import CertificateRefused, common_name
from flows.signature.verify import verify_pes

from .pesfactory import make_pes

pytestmark = pytest.mark.skipif(
    shutil.which("softhsm2-util") is None or not Path(tok.default_module()).exists(),
    reason="SoftHSM2 absent : installez le paquet Debian softhsm2 (apt-get install -y softhsm2)",
)

OFFICIALS = [("maire", "Jeanne Dupré", "Maire"), ("adjoint", "Luc Martin", "Adjoint aux finances")]


@pytest.fixture(scope="module")
def hsm(tmp_path_factory):
    from flows.signature.softhsm import provision_tokens

    out = provision_tokens(tmp_path_factory.mktemp("hsm"), OFFICIALS, seal="Syndicat mixte démo")
    yield out
    tok.reset()


def _cfg(info):
    from flows.signature.softhsm import token_config

    return token_config(info)


def _pin(info) -> str:
    return Path(info["pin_file"]).read_text().strip()


def _items(n: int) -> list[tuple[str, str, bytes]]:
    return [(f"i{k}", "sha256", hashlib.sha256(f"bordereau {k}".encode()).digest()) for k in range(n)]


def test_provisioning_keys_on_tokens_pins_0600_and_reuse(hsm, tmp_path):
    from flows.signature.softhsm import provision_tokens

    d = Path(hsm["conf"]).parent
    for info in [*hsm["officials"].values(), hsm["seal"]]:
        for f in (info["pin_file"], info["so_pin_file"]):
            assert stat.S_IMODE(Path(f).stat().st_mode) == 0o600
        pem = x509.load_pem_x509_certificate(Path(info["certificate"]).read_bytes())
        assert tok.read_certificate(_cfg(info)) == pem.public_bytes(serialization.Encoding.DER)
    # no private key file and no PKCS#12 for the officials: keys exist only on the tokens
    assert not list(d.glob("*.p12"))
    outside_tokens = [p for p in d.rglob("*") if p.is_file() and "tokens" not in p.parts and p.name != "ca-key.pem"]
    assert all(b"PRIVATE KEY" not in p.read_bytes() for p in outside_tokens)
    seal = x509.load_pem_x509_certificate(Path(hsm["seal"]["certificate"]).read_bytes())
    assert common_name(seal) == "Cachet serveur — Syndicat mixte démo"
    assert hsm["seal"]["cert_sha256"] not in {i["cert_sha256"] for i in hsm["officials"].values()}
    again = provision_tokens(d, OFFICIALS, seal="Syndicat mixte démo")
    assert again["created"] == [] and set(again["reused"]) == {"maire", "adjoint", "cachet-serveur"}
    assert again["officials"]["maire"]["cert_sha256"] == hsm["officials"]["maire"]["cert_sha256"]


def test_batch_signed_with_one_login_verifies(hsm):
    info = hsm["officials"]["maire"]
    out = tok.sign_digests(_cfg(info), _pin(info), _items(15))
    assert len(out.signatures) == 15 and not out.failed and out.key_type == "rsa"
    cert = x509.load_der_x509_certificate(out.certificate)
    for iid, _alg, digest in _items(15):
        cert.public_key().verify(out.signatures[iid], digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    sha1 = tok.sign_digests(_cfg(info), _pin(info), [("x", "sha1", hashlib.sha1(b"x").digest())])  # noqa: S324
    cert.public_key().verify(sha1.signatures["x"], hashlib.sha1(b"x").digest(), padding.PKCS1v15(), Prehashed(hashes.SHA1()))  # noqa: S324


def test_wrong_pin_one_attempt_nothing_signed_french(hsm):
    info = hsm["officials"]["adjoint"]
    cfg = _cfg(info)
    with pytest.raises(tok.WrongPin) as exc:
        tok.sign_digests(cfg, "00000000" if _pin(info) != "00000000" else "11111111", _items(3))
    msg = str(exc.value)
    assert "Code PIN incorrect" in msg and "rien n'a été signé" in msg and _pin(info) not in msg
    # the token is not locked: the right PIN still works right after
    flags = tok._get_token(cfg).flags
    assert not flags & tok._pkcs11().TokenFlag.USER_PIN_LOCKED
    assert len(tok.sign_digests(cfg, _pin(info), _items(1)).signatures) == 1


def test_pin_guard_never_tries_a_locked_or_last_try_token():
    tf = tok._pkcs11().TokenFlag
    with pytest.raises(tok.PinLocked, match="bloqué"):
        tok.pin_guard(tf.USER_PIN_LOCKED | tf.LOGIN_REQUIRED)
    with pytest.raises(tok.PinLocked, match="dernier-essai"):
        tok.pin_guard(tf.USER_PIN_FINAL_TRY)
    tok.pin_guard(tf.USER_PIN_COUNT_LOW | tf.LOGIN_REQUIRED)  # a low count alone is not a reason to refuse


def test_absent_token_and_bad_digests(hsm):
    info = hsm["officials"]["maire"]
    with pytest.raises(tok.TokenAbsent, match="Aucun support nommé « demat-inconnu »"):
        tok.sign_digests(tok.TokenConfig("demat-inconnu", softhsm_conf=info["softhsm_conf"]), "1234", _items(1))
    out = tok.sign_digests(_cfg(info), _pin(info), [("court", "sha256", b"trop court"), *_items(1)])
    assert "court" in out.failed and "i0" in out.signatures


def test_token_removed_mid_batch_keeps_what_was_signed(hsm, tmp_path):
    info = hsm["officials"]["maire"]
    tokens = Path(hsm["conf"]).parent / "tokens"
    moved = []

    def pull_out(item_id, n):
        if n == 3:  # after the 4th signature, the token goes away
            for child in tokens.iterdir():
                dst = tmp_path / child.name
                shutil.move(child, dst)
                moved.append((dst, child))

    try:
        out = tok.sign_digests(_cfg(info), _pin(info), _items(10), on_signed=pull_out)
    finally:
        for dst, src in moved:
            shutil.move(dst, src)
        tok.reset()
    assert sorted(out.signatures) == ["i0", "i1", "i2", "i3"]
    assert sorted(out.failed) == [f"i{k}" for k in range(4, 10)]
    assert "retiré" in out.interrupted and "4 élément(s) signé(s) sont conservés" in out.interrupted
    # back in: the rest can be signed
    assert len(tok.sign_digests(_cfg(info), _pin(info), _items(10)[4:]).signatures) == 6


def test_seal_signs_pes_and_pdf_from_the_hsm(hsm, tmp_path):
    from flows.signature.seal import seal_pdf, seal_pes
    from flows.signature.trust import TrustConfig

    trust = TrustConfig(anchors=[hsm["ca"]])
    signed, use = seal_pes(make_pes(2), _cfg(hsm["seal"]), _pin(hsm["seal"]), trust=trust)
    report = verify_pes(signed, trust_store=[hsm["ca"]], strict=True)
    assert report.ok, report.to_text()
    assert {r.role for r in report.results} == {"Cachet serveur"}
    assert use.signatures == 2 and use.subject.startswith("Cachet serveur")
    assert use.certificate_sha256 == hsm["seal"]["cert_sha256"] and "Cachet serveur" in use.summary_fr()
    pdf, pdf_use = seal_pdf(minimal_pdf("Arrêté automatique"), _cfg(hsm["seal"]), _pin(hsm["seal"]), trust=trust)
    from .test_remote import pades_check

    pades_check(pdf, hsm["ca"], tmp_path)
    assert pdf_use.kind == "pdf"
    # an official's token is not a seal
    with pytest.raises(CertificateRefused, match="pas un certificat de cachet serveur"):
        seal_pes(make_pes(1), _cfg(hsm["officials"]["maire"]), _pin(hsm["officials"]["maire"]))


def test_expiry_alerts_for_token_certificates(hsm):
    from datetime import UTC, datetime, timedelta

    from flows.signature.watch import token_certificates_expiring

    maire_der = x509.load_pem_x509_certificate(Path(hsm["officials"]["maire"]["certificate"]).read_bytes())
    later = datetime.now(UTC) + timedelta(days=365 * 3 - 10)  # 3-year certificates: about to expire then
    alerts = token_certificates_expiring([maire_der, _cfg(hsm["seal"]), tok.TokenConfig("demat-absent", softhsm_conf=hsm["conf"])],
                                         within_days=60, at=later)
    subjects = {a.subject: a for a in alerts}
    assert "Jeanne Dupré" in subjects and subjects["Jeanne Dupré"].usage == "de signature"
    assert subjects["Cachet serveur — Syndicat mixte démo"].usage == "de cachet serveur"
    assert "renouveler" in subjects["Jeanne Dupré"].message
    assert any(a.level == "illisible" and "demat-absent" in a.message for a in alerts)
    assert token_certificates_expiring([maire_der, _cfg(hsm["seal"])], within_days=60) == []  # nothing due today


def test_agent_imports_nothing_heavy():
    """The agent runs on the official's workstation: no lxml, cryptography, pyHanko nor Airflow."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import json, sys; import signer_agent.cli; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'lxml', 'cryptography', 'pyhanko', 'airflow', 'pandas', 'signxml', 'sqlalchemy'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_qualified_key_always_authenticate_still_one_pin_entry(hsm):
    """Keys with CKA_ALWAYS_AUTHENTICATE refuse a signature without a context-specific login
    (SoftHSM2 enforces it): the agent re-presents the PIN typed once, for each signature."""
    from pkcs11 import Attribute, KeyType, Mechanism

    from flows.signature.softhsm import _run

    conf = Path(hsm["conf"])
    assert _run(["--init-token", "--free", "--label", "demat-qualifie", "--pin", "24681357", "--so-pin", "so-qualifie"], conf).returncode == 0
    cfg = tok.TokenConfig("demat-qualifie", softhsm_conf=str(conf), key_label="q")
    with tok._get_token(cfg).open(user_pin="24681357", rw=True) as s:
        _pub, priv = s.generate_keypair(KeyType.RSA, 2048, store=True, label="q", id=b"q",
                                        private_template={Attribute.ALWAYS_AUTHENTICATE: True})
        with pytest.raises(tok._pkcs11().exceptions.UserNotLoggedIn):
            priv.sign(tok.DIGEST_INFO["sha256"] + hashlib.sha256(b"x").digest(), mechanism=Mechanism.RSA_PKCS)
    out = tok.sign_digests(cfg, "24681357", _items(5))
    assert len(out.signatures) == 5 and not out.failed
