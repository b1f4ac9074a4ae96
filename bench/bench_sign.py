"""Benchmark: XAdES signing of PES bordereaux with flows.signature vs the xmlsec1 command line.

Material: one PES_Aller with N bordereaux (default 500), a demo PKI in a temporary directory.
- demat: sign_pes on the whole file (all N signatures), then verify_pes on the result.
- baseline: xmlsec1 --sign (libxmlsec1 + OpenSSL) on single-bordereau templates cut from the
  same file, carrying the same XAdES properties, all passed to ONE xmlsec1 process (start-up
  amortised; xmlsec1 signs one ds:Signature per document, so a per-bordereau policy needs one
  template per bordereau). Also shown: one process per bordereau (a shell loop), and
  xmlsec1 --verify on the signed templates (one process).
Both sides are measured the same way: warm (one untimed run first, for each: imports, caches, the
binary in the page cache), then the median of --repeat timed runs, for demat and for every xmlsec1
figure alike. The xmlsec1 processes' start-up is inside their figures (that is what a caller of
the command line pays); the one-process figure amortises it over k templates.
Prints a table and machine lines: FIGURE<TAB>name<TAB>value<TAB>unit<TAB>baseline<TAB>ratio<TAB>note.

    .venv/bin/python bench/bench_sign.py [--bordereaux 500] [--baseline-samples 60]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import timed  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from flows.signature.certs import load_signer  # noqa: E402
from flows.signature.pki import create_demo_pki, write_private  # noqa: E402
from flows.signature.verify import verify_pes  # noqa: E402
from flows.signature.xades import sign_pes  # noqa: E402

ID_ATTRS = [
    "--id-attr:Id",
    "Bordereau",
    "--id-attr:Id",
    "http://uri.etsi.org/01903/v1.1.1#:SignedProperties",
]


def make_material(n: int) -> tuple[bytes, str]:
    try:
        from flows.helios.generate import generate_pes

        pes = generate_pes(
            siret="21400192300018",
            idpost="040000",
            codcol="001",
            codbud="00",
            nomfic="PESALR2_BENCH_SIGNATURE",
            n_bordereaux=n,
            pieces_per_bordereau=2,
        )
        return pes, "flows.helios.generate.generate_pes"
    except ImportError:
        from tests.unit.signature.pesfactory import make_pes

        return make_pes(n, pieces=2), "tests/unit/signature/pesfactory.make_pes"


def to_template(signed: bytes) -> bytes:
    """A signed file turned back into an xmlsec1 template: same XAdES block, values emptied."""
    t = re.sub(rb"<ds:DigestValue>[^<]*</ds:DigestValue>", b"<ds:DigestValue></ds:DigestValue>", signed)
    t = re.sub(rb"(<ds:SignatureValue[^>]*>)[^<]*(</ds:SignatureValue>)", rb"\1\2", t)
    return re.sub(rb"<ds:X509Certificate>[^<]*</ds:X509Certificate>", b"<ds:X509Certificate/>", t)


def warm_median(fn, runs: int):
    """One untimed warm-up call, then the median of `runs` timed calls (the same rule for both sides)."""
    fn()
    return timed(fn, runs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bordereaux", type=int, default=500)
    ap.add_argument("--baseline-samples", type=int, default=100, help="bordereaux signed by xmlsec1 (rate extrapolated)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = args.bordereaux

    with tempfile.TemporaryDirectory(prefix="bench-sign-") as tmp:
        tmp = Path(tmp)
        pki = create_demo_pki(tmp / "pki", [("maire", "Jeanne Dupré", "Maire")], ca_key_size=2048)
        p12 = pki["officials"]["maire"]["p12"]
        password = Path(pki["officials"]["maire"]["password_file"]).read_bytes().strip()
        pes, source = make_material(n)

        sign_s, signed = warm_median(lambda: sign_pes(pes, p12, password, role="Maire", place="40000 Mont-de-Marsan"),
                                     args.repeat)
        verify_s, report = warm_median(lambda: verify_pes(signed, trust_store=[pki["ca"]], strict=True), args.repeat)
        assert report.ok and len(report.results) == n, report.to_text()[:2000]
        sign_rate, verify_rate = n / sign_s, n / verify_s

        xmlsec = shutil.which("xmlsec1")
        base_sign_rate = base_verify_rate = per_process_rate = template_kb = None
        if xmlsec:
            signer = load_signer(p12, password)
            key_pem = write_private(
                tmp / "key.pem",
                signer.key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
            )
            cert_pem = tmp / "cert.pem"
            cert_pem.write_bytes(signer.cert.public_bytes(serialization.Encoding.PEM))
            k = min(args.baseline_samples, n)
            # k single-bordereau files cut from the same material (same bordereaux, same XAdES block)
            head, rest = signed.split(b"<Bordereau ", 1)
            blocks = re.findall(rb"<Bordereau .*?</Bordereau>", b"<Bordereau " + rest, flags=re.S)[:k]
            # ...closed right after the block: no PES_PJ, so each template stays small (fair to xmlsec1)
            last_end = signed.rindex(b"</Bordereau>") + len(b"</Bordereau>")
            block_end = re.search(rb"</PES_(?:Depense|Recette)Aller>", signed[last_end:]).end()
            tail = signed[last_end : last_end + block_end] + b"\n" + signed[signed.rindex(b"</") :]
            templates = []
            for i, block in enumerate(blocks):
                path = tmp / f"tpl{i}.xml"
                path.write_bytes(to_template(head + block + tail))
                templates.append(path)
            sign_cmd = [xmlsec, "--sign", *ID_ATTRS, "--privkey-pem", f"{key_pem},{cert_pem}"]
            # (a) one xmlsec1 process for all k templates: start-up amortised, the fair baseline
            batch_s, out = warm_median(lambda: subprocess.run([*sign_cmd, *map(str, templates)], check=True,
                                                              capture_output=True).stdout, args.repeat)
            base_sign_rate = k / batch_s
            docs = [b"<?xml" + d for d in out.split(b"<?xml")[1:]]
            assert len(docs) == k
            template_kb = sum(p.stat().st_size for p in templates) / k / 1024
            for i, doc in enumerate(docs):
                (tmp / f"out{i}.xml").write_bytes(doc)
            # cross-check: what xmlsec1 signed, demat verifies
            assert verify_pes(docs[0], trust_store=[pki["ca"]], strict=True).ok
            # (b) one process per bordereau, as a shell loop would do it
            m = min(k, 20)
            def loop():
                for i in range(m):
                    subprocess.run([*sign_cmd, "--output", str(tmp / f"one{i}.xml"), str(templates[i])], check=True,
                                   capture_output=True)

            loop_s, _ = warm_median(loop, args.repeat)
            per_process_rate = m / loop_s
            verify_cmd = [xmlsec, "--verify", *ID_ATTRS, "--trusted-pem", pki["ca"],
                          *(str(tmp / f"out{i}.xml") for i in range(k))]
            vs, _ = warm_median(lambda: subprocess.run(verify_cmd, check=True, capture_output=True), args.repeat)
            base_verify_rate = k / vs

    def ratio(v, b):
        return f"{v / b:.2f}" if b else "-"

    def fmt(b):
        return f"{b:.1f}" if b else "-"

    print(f"Matériel : 1 PES_Aller, {n} bordereaux, {len(pes) / 1e6:.2f} Mo non signé, {len(signed) / 1e6:.2f} Mo signé ({source})")
    print("Clé RSA 2048, politique Hélios 1.7 (rsa-sha256) ; des deux côtés : une exécution d'échauffement non "
          f"comptée, puis la médiane de {args.repeat} exécution(s)")
    print(f"{'mesure':38} {'demat':>12} {'xmlsec1':>12} {'ratio':>7}")
    print(f"{'signature (bordereaux/s)':38} {sign_rate:12.1f} {fmt(base_sign_rate):>12} {ratio(sign_rate, base_sign_rate):>7}")
    print(f"{'vérification (bordereaux/s)':38} {verify_rate:12.1f} {fmt(base_verify_rate):>12} {ratio(verify_rate, base_verify_rate):>7}")
    base_total = n / base_sign_rate if base_sign_rate else None
    print(f"{f'signer {n} bordereaux (s)':38} {sign_s:12.2f} {fmt(base_total):>12} {ratio(base_total, sign_s) if base_total else '-':>7}")
    if template_kb:
        print(f"xmlsec1 : {k} gabarits d'un bordereau ({template_kb:.1f} Ko chacun) dans un seul processus")
    if per_process_rate:
        print(f"{'xmlsec1, un processus par bordereau (b/s)':38} {'':>12} {per_process_rate:12.1f}")
    if not xmlsec:
        print("xmlsec1 absent : référence non mesurée (apt-get install -y xmlsec1)")
    how = (f"both warm, median of {args.repeat} run(s) each; demat: 1 file of {n} bordereaux; xmlsec1: "
           f"{min(args.baseline_samples, n)} one-bordereau templates")
    print(f"FIGURE\tsign_pes_bordereaux_per_s\t{sign_rate:.1f}\tbordereaux/s\t{fmt(base_sign_rate)}\t"
          f"{ratio(sign_rate, base_sign_rate)}\t{how}, one xmlsec1 process")
    print(f"FIGURE\tverify_pes_bordereaux_per_s\t{verify_rate:.1f}\tbordereaux/s\t{fmt(base_verify_rate)}\t"
          f"{ratio(verify_rate, base_verify_rate)}\t{how}, one xmlsec1 process")
    if per_process_rate:
        print(
            f"FIGURE\tsign_pes_vs_xmlsec1_per_process\t{sign_rate:.1f}\tbordereaux/s\t{per_process_rate:.1f}\t"
            f"{ratio(sign_rate, per_process_rate)}\t{how}, one xmlsec1 process per bordereau"
        )
    print(
        f"FIGURE\tsign_pes_{n}_bordereaux_seconds\t{sign_s:.2f}\ts\t{fmt(base_total)}\t"
        f"{ratio(sign_s, base_total) if base_total else '-'}\t{how}; xmlsec1 extrapolated from its rate"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
