"""Start the three counterparts: SFTP gateways on loopback plus their processing loops.

    python -m simulators --state DIR --config flows/config/demo.yaml [--port-base N]
        [--delay S] [--later-delay S] [--refuse-rate P] [--silence-rate P] [--later-rate P]
        [--seed N] [--set prefecture.refuse_rate=0.2 ...] [--mail-dir DIR [--smtp-port N]]
        [--trust-store CA.pem ...]

Each counterpart judges on its own (issue 18): the official schemas when a reference directory is
available ($DEMAT_REFERENCE_DIR; the tests point it at ../shared/reference), else the project's
(the start-up log says which), and signatures checked against ITS trust store: the --trust-store
PEM files, by default the demo CA of the platform's PKI folder (<state>/pki/ca.pem) when it exists.

Layout under DIR/simulators/ (created on first start, reused afterwards):
    client/id_ed25519[.pub]     demat's client key (authorised on the three gateways)
    <name>/host_key[.pub]       the gateway's ed25519 host key (pinned by demat)
    <name>/authorized_keys      public keys allowed to log in
    <name>/ledger.sqlite        receptions and outbox of replies
    <name>/DOWN, <name>/HANG    outage switches (touch / rm)
    <name>/sftp/depot, /retour  what the account sees (chroot)
    endpoints.json              how to reach each gateway (no secret: a key *path*, a *public* host key)
                                and, with --mail-dir, the SMTP sink ("smtp", kind "smtp")

`--port-base N` gives prefecture N, dgfip N+1, sae N+2 (stable across restarts, so Airflow
Connections stay valid); without it the ports are picked at each start and endpoints.json
says which. Logs go to stdout; key material is never logged (fingerprints only).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path

from simulators.counterparts import Counterpart, Settings
from simulators.dgfip import dgfip_rules
from simulators.keys import ensure_ed25519_key, fingerprint, write_authorized_keys
from simulators.prefecture import prefecture_rules
from simulators.sae import sae_rules
from simulators.sftpd import Account, ServerThread, SftpServer

log = logging.getLogger("simulators")

COUNTERPARTS = {"prefecture": prefecture_rules, "dgfip": dgfip_rules, "sae": sae_rules}
USERNAME = "demat"
UPLOAD_DIR = "/depot"
REPLY_DIR = "/retour"


class Simulators:
    """The three counterparts of one state directory; start() / stop(), or use as a context manager."""

    def __init__(
        self,
        state: str | Path,
        *,
        host: str = "127.0.0.1",
        port_base: int = 0,
        settings: dict[str, Settings] | None = None,
        names: tuple[str, ...] = tuple(COUNTERPARTS),
    ):
        self.base = Path(state) / "simulators"
        self.base.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.client_key = self.base / "client" / "id_ed25519"
        client_pub = ensure_ed25519_key(self.client_key, comment="demat-client")
        self.servers: dict[str, SftpServer] = {}
        self.counterparts: dict[str, Counterpart] = {}
        demo_ca = Path(state) / "pki" / "ca.pem"  # the platform's demo CA, when no trust store is given
        for i, name in enumerate(names):
            root = self.base / name
            cp = Counterpart(name, root, COUNTERPARTS[name], (settings or {}).get(name) or Settings())
            cp.settings.extra.setdefault("trust_store", [str(demo_ca.resolve())])
            write_authorized_keys(root / "authorized_keys", [client_pub])
            self.servers[name] = SftpServer(
                host_key=root / "host_key",
                accounts=[Account(USERNAME, cp.jail, root / "authorized_keys")],
                host=host,
                port=port_base + i if port_base else 0,
                switch_dir=root,
                name=name,
            )
            self.counterparts[name] = cp
        self._thread: ServerThread | None = None
        self.services: dict[str, dict] = {}  # non-SFTP endpoints (the SMTP sink), written beside them

    def start(self) -> Simulators:
        self._thread = ServerThread(self.servers.values()).start()
        for cp in self.counterparts.values():
            cp.start()
        self.write_endpoints()
        return self

    def stop(self) -> None:
        for cp in self.counterparts.values():
            cp.close()
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def __enter__(self) -> Simulators:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def endpoints(self) -> dict[str, dict]:
        out = {}
        for name, server in self.servers.items():
            line = server.host_key_line
            out[name] = {
                "host": server.host,
                "port": server.port,
                "username": USERNAME,
                "key_path": str(self.client_key.resolve()),
                "host_key": line,
                "host_key_fingerprint": fingerprint(line),
                "upload_dir": UPLOAD_DIR,
                "reply_dir": REPLY_DIR,
                "root": str(self.counterparts[name].root.resolve()),
            }
        return out

    def write_endpoints(self) -> Path:
        path = self.base / "endpoints.json"
        tmp = path.with_name(".endpoints.json.tmp")
        data = {**self.endpoints(), **self.services}
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def trust_paths(args: argparse.Namespace) -> list[str]:
    """--trust-store, else the demo CA the platform's PKI folder holds (never its private keys)."""
    if getattr(args, "trust_store", None):
        return [str(Path(p).resolve()) for p in args.trust_store]
    demo = Path(args.state) / "pki" / "ca.pem"  # read again when it appears (the platform may create it later)
    return [str(demo.resolve())]


def build_settings(args: argparse.Namespace, config) -> dict[str, Settings]:
    common = dict(
        delay=args.delay, later_delay=args.later_delay, refuse_rate=args.refuse_rate,
        silence_rate=args.silence_rate, later_rate=args.later_rate, seed=args.seed,
    )
    settings = {name: Settings(**common) for name in COUNTERPARTS}
    settings["prefecture"].max_bytes = 150 * 1024 * 1024  # the @ctes archive cap (FACTS.md), said in its refusal
    trust = trust_paths(args)
    for s in settings.values():
        s.extra["trust_store"] = list(trust)
    if config is not None:
        # generated files number their bordereaux from 1: the embedded DGFiP does not hold that against
        # a later file unless asked (--set dgfip.memoire_bordereaux=true)
        settings["dgfip"].extra["memoire_bordereaux"] = False
        settings["dgfip"].extra["collectivites"] = [  # the budgets open in Hélios
            {"siret": c.siret, "idpost": c.helios.idpost, "codcol": c.helios.codcol, "codbud": c.helios.codbud}
            for c in config.collectivites if c.helios is not None]
        agreements = sorted({p.archival_agreement for c in config.collectivites for p in c.archive.values()})
        settings["sae"].extra["known_agreements"] = agreements
        settings["sae"].extra["seda_version"] = config.seda_version
    known = {f.name for f in fields(Settings)}
    for item in args.set or []:
        key, _, value = item.partition("=")
        name, _, attr = key.partition(".")
        if name not in settings or not attr or not _:
            raise SystemExit(f"--set {item!r} : attendu NOM.CLE=VALEUR avec NOM parmi {', '.join(COUNTERPARTS)}")
        if attr in known and attr != "extra":
            setattr(settings[name], attr, _parse_value(value))
        else:
            settings[name].extra[attr] = _parse_value(value)
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators", description="Contreparties simulées (préfecture, DGFiP, SAE) sur SFTP.")
    parser.add_argument("--state", required=True, help="dossier d'état (clés, dépôts, registres)")
    parser.add_argument("--config", help="configuration de la plateforme (accords de versement connus du SAE)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port-base", type=int, default=0, help="préfecture N, DGFiP N+1, SAE N+2 (0 : ports libres)")
    parser.add_argument("--delay", type=float, default=2.0, help="secondes avant la première réponse")
    parser.add_argument("--later-delay", type=float, default=30.0, help="secondes avant les courriers / la réponse du SAE")
    parser.add_argument("--refuse-rate", type=float, default=0.0)
    parser.add_argument("--silence-rate", type=float, default=0.0)
    parser.add_argument("--later-rate", type=float, default=0.0, help="préfecture : probabilité d'un courrier ultérieur")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", metavar="NOM.CLE=VALEUR", help="réglage d'une contrepartie")
    parser.add_argument("--mail-dir", help="démarre le puits SMTP : chaque courriel reçu y devient un .eml")
    parser.add_argument("--smtp-port", type=int, default=0, help="port du puits SMTP (0 : port libre)")
    parser.add_argument("--trust-store", action="append", metavar="CA.pem",
                        help="certificat(s) d'autorité que les contreparties acceptent (défaut : <état>/pki/ca.pem)")
    args = parser.parse_args(argv)

    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    config = None
    if args.config:
        from flows.config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
    sims = Simulators(args.state, host=args.host, port_base=args.port_base, settings=build_settings(args, config))
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %s reçu : arrêt des simulateurs", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sink = None
    if args.mail_dir:
        from simulators.smtpsink import SmtpSink

        sink = SmtpSink(args.mail_dir, host=args.host, port=args.smtp_port).start()
        sims.services["smtp"] = sink.endpoint()
        log.info("puits SMTP : smtp://%s:%s, courriels dans %s", sink.host, sink.port, args.mail_dir)
    from simulators import reference, xmlsig

    log.info("schémas : %s", reference.describe())
    trust = trust_paths(args)
    missing = [p for p in trust if not Path(p).is_file()]
    log.info("signatures : %s%s", xmlsig.TrustStore.load([p for p in trust if p not in missing]).describe(),
             f" (en attente de {', '.join(missing)})" if missing else "")
    sims.start()
    path = sims.base / "endpoints.json"
    for name, ep in sims.endpoints().items():
        log.info("%s : sftp://%s@%s:%s%s (clé d'hôte %s)", name, ep["username"], ep["host"], ep["port"],
                 ep["upload_dir"], ep["host_key_fingerprint"])
    log.info("points d'accès écrits dans %s", path)
    try:
        while not stop.wait(1):
            pass
    finally:
        sims.stop()
        if sink is not None:
            sink.stop()
        log.info("simulateurs arrêtés")
    return 0


if __name__ == "__main__":
    sys.exit(main())
