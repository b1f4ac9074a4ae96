"""Benchmark: two-phase signature on a PKCS#11 token (SoftHSM2) vs the same signatures in process.

Material: one PES_Aller of N bordereaux (default 100), a SoftHSM2 token provisioned in a temporary
directory (RSA 2048 key generated on the token), the same certificate's role for both paths.
- remote: from the PIN (agent side: one login, N digests signed on the token) to all signatures
  verified and assembled on the platform side (apply_signatures). Preparation is timed apart:
  it happens before the official is asked anything.
- baseline: sign_pes_with a software key of the same size (prepare + sign + assemble in process).
- platform CPU per signature: CPU seconds of preparing + verifying + assembling, divided by N.
- agent process: `python -m signer_agent sign --prepared` wall time (start-up, module load, login,
  N signatures), for context.
Prints FIGURE lines and writes the raw runs to bench/results/<date>-bench_remote_sign-raw.json.

    .venv/bin/python bench/bench_remote_sign.py [--bordereaux 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import figure, loadavg, log  # noqa: E402
from cryptography import x509  # noqa: E402

from flows.helios.generate import generate_pes  # noqa: E402
from flows.signature import token as tok  # noqa: E402
from flows.signature.certs import Signer  # noqa: E402
from flows.signature.pki import make_certificate, new_rsa_key  # noqa: E402
from flows.signature.remote import apply_signatures, load_prepared, make_batch, prepare_pes  # noqa: E402
from flows.signature.softhsm import provision_tokens, token_config  # noqa: E402
from flows.signature.verify import verify_pes  # noqa: E402
from flows.signature.xades import sign_pes_with  # noqa: E402
from signer_agent.cli import sign_batch  # noqa: E402


class _Null:
    def write(self, _s):
        return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bordereaux", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=None, help="raw JSON (default bench/results/<date>-bench_remote_sign-raw.json)")
    args = ap.parse_args()
    n = args.bordereaux
    started = datetime.now(UTC)
    load0 = loadavg()
    pes = generate_pes(siret="21400192300018", idpost="040000", codcol="001", codbud="00",
                       nomfic="PESALR2_BENCH_REMOTE", n_bordereaux=n, pieces_per_bordereau=2)
    with tempfile.TemporaryDirectory(prefix="bench-hsm-") as tmp:
        t0 = time.perf_counter()
        hsm = provision_tokens(Path(tmp), [("maire", "Jeanne Dupré", "Maire")])
        log(f"SoftHSM2 token provisioned in {time.perf_counter() - t0:.2f} s; {n} bordereaux, {len(pes)} bytes")
        info = hsm["officials"]["maire"]
        cfg = token_config(info)
        pin = Path(info["pin_file"]).read_text().strip()
        cert = x509.load_pem_x509_certificate(Path(info["certificate"]).read_bytes())
        soft_key = new_rsa_key(2048)
        _k, soft_cert = make_certificate("Jeanne Dupré", key=soft_key, role="Maire")
        soft = Signer(key=soft_key, cert=soft_cert)

        runs = []
        for r in range(args.runs):
            c0, w0 = time.process_time(), time.perf_counter()
            prepared = prepare_pes(pes, cert, role="Maire")
            stored = prepared.to_json(include_document=False)
            c_prep, w_prep = time.process_time() - c0, time.perf_counter() - w0
            batch = make_batch({"d": prepared}, batch_id=f"b{r}")
            # --- from the PIN ---
            w1 = time.perf_counter()
            c_agent0 = time.process_time()
            answer = sign_batch(batch, cfg, lambda: pin, out=_Null())
            c_agent = time.process_time() - c_agent0
            w_agent = time.perf_counter() - w1
            c2, w2 = time.process_time(), time.perf_counter()
            applied = apply_signatures({"d": _with_doc(load_prepared(stored), pes)}, answer)
            c_asm, w_asm = time.process_time() - c2, time.perf_counter() - w2
            w_from_pin = time.perf_counter() - w1
            assert set(applied.signed) == {"d"}, applied.refused
            # --- baseline: the same signatures in process with a software key ---
            w3 = time.perf_counter()
            local = sign_pes_with(pes, soft, role="Maire")
            w_local = time.perf_counter() - w3
            runs.append({"prepare_wall": w_prep, "prepare_cpu": c_prep, "agent_wall": w_agent, "agent_cpu": c_agent,
                         "assemble_wall": w_asm, "assemble_cpu": c_asm, "from_pin_wall": w_from_pin,
                         "inprocess_wall": w_local})
            log(f"run {r + 1}: from PIN {w_from_pin:.3f} s (token {w_agent:.3f} s, assemble {w_asm:.3f} s), "
                f"prepare {w_prep:.3f} s, in process {w_local:.3f} s")
        report = verify_pes(applied.signed["d"], trust_store=[hsm["ca"]], strict=True)
        assert report.ok and len(report.results) == n, report.to_text()[:2000]
        assert verify_pes(local).intact
        # the agent as a process (what the official runs)
        (Path(tmp) / "lot.json").write_text(json.dumps(make_batch({"d": prepare_pes(pes, cert, role="Maire")}, batch_id="p")))
        env = dict(os.environ, SOFTHSM2_CONF=hsm["conf"], PYTHONPATH=str(ROOT))
        w4 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "signer_agent", "sign", "--prepared", str(Path(tmp) / "lot.json"),
                              "--token-label", info["label"], "--pin-stdin", "--out", str(Path(tmp) / "sigs.json")],
                             input=pin + "\n", capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        w_proc = time.perf_counter() - w4
        assert res.returncode == 0, res.stderr
        tok.reset()

    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    platform_cpu = (med["prepare_cpu"] + med["assemble_cpu"]) / n
    note = f"load {load0}"
    lines = [
        figure(f"remote_sign_from_pin_{n}_bordereaux", med["from_pin_wall"], "s", med["inprocess_wall"], note=note),
        figure(f"remote_sign_token_{n}_signatures", med["agent_wall"], "s", note=note),
        figure(f"remote_sign_assemble_{n}_bordereaux", med["assemble_wall"], "s", note=note),
        figure(f"remote_sign_prepare_{n}_bordereaux", med["prepare_wall"], "s", note=note),
        figure(f"inprocess_sign_{n}_bordereaux", med["inprocess_wall"], "s", note=note),
        figure("remote_sign_platform_cpu_per_signature", platform_cpu * 1000, "ms", note=note),
        figure(f"signer_agent_process_{n}_signatures", w_proc, "s", note=note),
    ]
    for line in lines:
        print(line)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"{started:%Y%m%d-%H%M%S}-bench_remote_sign-raw.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"benchmark": "bench_remote_sign", "started": started.isoformat(), "bordereaux": n,
                               "pes_bytes": len(pes), "load_start": load0, "load_end": loadavg(), "runs": runs,
                               "median": med, "platform_cpu_per_signature_s": platform_cpu,
                               "agent_process_wall_s": w_proc, "figures": lines}, indent=1) + "\n")
    log(f"raw figures: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


def _with_doc(prepared, pes: bytes):
    prepared.document = pes  # the platform reads it back from its store
    return prepared


if __name__ == "__main__":
    sys.exit(main())
