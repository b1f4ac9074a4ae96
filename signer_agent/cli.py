"""`demat-signer`: sign what waits for you on your own token, with a PIN demat never sees.

    demat-signer sign --prepared lot.json --token-label demat-maire --pin-prompt --out signatures.json
    demat-signer list   --url https://demat.example.fr --username jdupre
    demat-signer show   DOSSIER --url ... [--document acte.pdf]
    demat-signer sign   --url ... --token-label demat-maire [--ids D1,D2]    (all pending by default)
    demat-signer reject DOSSIER --url ... --motif "Montant erroné"

Exit codes: 0 done, 1 refused by the platform or partly signed, 2 bad input, 3 wrong PIN,
4 token absent, locked or unusable, 5 platform unreachable.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import json
import os
import sys
from pathlib import Path

from flows.signature import token as tok
from signer_agent.client import ApiError, SignatureClient

TOKEN_ENV = "DEMAT_API_TOKEN"  # noqa: S105 - the name of a variable, not a secret
MAX_ITEMS = 10_000


class BadInput(ValueError):
    pass


def _err(msg: str) -> None:
    print(f"demat-signer : {msg}", file=sys.stderr)


def read_pin(args) -> str:
    if args.pin_stdin:
        line = sys.stdin.readline()
        pin = line.rstrip("\r\n")
    else:
        if not sys.stdin.isatty() and not args.pin_prompt:
            raise BadInput("Aucun terminal pour demander le code PIN : utilisez --pin-prompt dans un terminal ou --pin-stdin.")
        pin = getpass.getpass("Code PIN du support de signature : ")
    if not pin:
        raise BadInput("Code PIN vide : rien n'a été signé.")
    return pin


def token_config(args) -> tok.TokenConfig:
    return tok.TokenConfig(label=args.token_label, module=args.module, key_label=args.key_label,
                           softhsm_conf=os.environ.get("SOFTHSM2_CONF"))


def parse_batch(batch: dict) -> list[tuple[str, str, bytes, str]]:
    """(id, algorithm, digest, summary) from a demat-batch/1 object, refusing anything odd."""
    if not isinstance(batch, dict) or batch.get("format") != "demat-batch/1":
        raise BadInput("Lot de signature d'un format inconnu (demat-batch/1 attendu).")
    items = batch.get("items")
    if not isinstance(items, list) or not items:
        raise BadInput("Le lot ne contient rien à signer.")
    if len(items) > MAX_ITEMS:
        raise BadInput(f"Le lot contient plus de {MAX_ITEMS} éléments : refusé.")
    out, seen = [], set()
    for it in items:
        if not isinstance(it, dict):
            raise BadInput("Élément de lot invalide.")
        iid, alg, dig = it.get("id"), it.get("digest_algorithm"), it.get("digest")
        if not isinstance(iid, str) or not iid or iid in seen:
            raise BadInput(f"Identifiant d'élément absent ou répété : « {iid} ».")
        if alg not in tok.DIGEST_SIZE:
            raise BadInput(f"Algorithme d'empreinte non pris en charge pour « {iid} » : {alg}.")
        try:
            digest = base64.b64decode(dig, validate=True)
        except (ValueError, TypeError):
            raise BadInput(f"Empreinte illisible pour « {iid} ».") from None
        if len(digest) != tok.DIGEST_SIZE[alg]:
            raise BadInput(f"Empreinte de « {iid} » de longueur inattendue pour {alg}.")
        seen.add(iid)
        out.append((iid, alg, digest, str(it.get("summary") or "")))
    return out


def sign_batch(batch: dict, config: tok.TokenConfig, pin_reader, *, allow_final_try: bool = False,
               out=sys.stdout) -> dict:
    """Sign a demat-batch/1 on the token with one PIN entry; returns the demat-signatures/1 answer."""
    items = parse_batch(batch)
    cert = tok.read_certificate(config)  # public: read before asking the PIN
    expected = batch.get("certificate_sha256")
    if expected and hashlib.sha256(cert).hexdigest() != str(expected).lower():
        raise tok.TokenError(
            f"Ce lot a été préparé pour un autre certificat que celui du support « {config.label} » "
            f"({batch.get('signer') or 'signataire inconnu'}) : branchez le bon support."
        )
    print(f"{len(items)} élément(s) à signer pour {batch.get('signer') or 'le titulaire du support'} :", file=out)
    for _iid, _alg, _dig, summary in items[:50]:
        print(f"  - {summary or _iid}", file=out)
    if len(items) > 50:
        print(f"  ... et {len(items) - 50} autre(s)", file=out)
    pin = pin_reader()
    try:
        outcome = tok.sign_digests(config, pin, [(i, a, d) for i, a, d, _s in items], allow_final_try=allow_final_try)
    finally:
        del pin
    return {
        "format": "demat-signatures/1",
        "batch_id": batch.get("batch_id"),
        "certificate": base64.b64encode(outcome.certificate or cert).decode("ascii"),
        "signatures": {k: base64.b64encode(v).decode("ascii") for k, v in outcome.signatures.items()},
        "failed": outcome.failed,
    }


def _client(args) -> SignatureClient:
    client = SignatureClient(args.url, os.environ.get(TOKEN_ENV), cafile=args.cafile)
    if args.username:
        password = getpass.getpass(f"Mot de passe demat de {args.username} : ")
        client.login(args.username, password)
    elif not client.token:
        raise BadInput(f"Identifiez-vous : --username (mot de passe demandé) ou un jeton dans {TOKEN_ENV}.")
    return client


def _fmt_item(it: dict) -> str:
    parts = [str(it.get("id", "?")), str(it.get("collectivite", "")), str(it.get("objet", ""))]
    if it.get("montant_total"):
        parts.append(f"{it['montant_total']} €")
    if it.get("bordereaux"):
        parts.append(f"{it['bordereaux']} bordereau(x)")
    return " | ".join(p for p in parts if p)


def cmd_sign(args) -> int:
    config = token_config(args)
    if args.prepared:
        try:
            batch = json.loads(Path(args.prepared).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BadInput(f"Lot {args.prepared} illisible : {exc}") from None
        answer = sign_batch(batch, config, lambda: read_pin(args), allow_final_try=args.dernier_essai)
        Path(args.out).write_text(json.dumps(answer, indent=1), encoding="utf-8")
        print(f"{len(answer['signatures'])} signature(s) écrite(s) dans {args.out}.")
        for iid, reason in answer["failed"].items():
            _err(f"{iid} non signé : {reason}")
        return 1 if answer["failed"] else 0
    client = _client(args)
    ids = [i for i in (args.ids or "").split(",") if i] or [it["id"] for it in client.pending()]
    if not ids:
        print("Rien n'attend votre signature.")
        return 0
    cert = tok.read_certificate(config)
    batch = client.prepare(ids, base64.b64encode(cert).decode("ascii"))
    answer = sign_batch(batch, config, lambda: read_pin(args), allow_final_try=args.dernier_essai)
    result = client.post_signatures(batch["batch_id"], answer)
    for ref in result.get("signed", []):
        print(f"Signé : {ref}")
    for iid, reason in {**answer["failed"], **(result.get("refused") or {})}.items():
        _err(f"{iid} : {reason}")
    return 1 if (answer["failed"] or result.get("refused") or result.get("waiting")) else 0


def cmd_list(args) -> int:
    items = _client(args).pending()
    if not items:
        print("Rien n'attend votre signature.")
    for it in items:
        print(_fmt_item(it))
    return 0


def cmd_show(args) -> int:
    client = _client(args)
    detail = client.show(args.dossier)
    print(json.dumps(detail, indent=1, ensure_ascii=False))
    if args.document:
        Path(args.document).write_bytes(client.document(args.dossier))
        print(f"Document écrit dans {args.document}.")
    return 0


def cmd_reject(args) -> int:
    out = _client(args).reject(args.dossier, args.motif)
    print(out.get("message") or f"Refus du dossier {args.dossier} enregistré.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demat-signer", description="Signer sur son propre support (PKCS#11) ce qui attend dans demat.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def online(sp, required=True):
        sp.add_argument("--url", required=required, help="adresse de la plateforme demat")
        sp.add_argument("--username", help="compte demat (le mot de passe est demandé)")
        sp.add_argument("--cafile", help="AC de la plateforme (https)")

    s = sub.add_parser("sign", help="signer un lot (hors ligne avec --prepared, ou ce qui attend sur la plateforme)")
    online(s, required=False)
    s.add_argument("--prepared", help="lot demat-batch/1 (fichier JSON) à signer hors ligne")
    s.add_argument("--out", help="fichier où écrire les signatures (avec --prepared)")
    s.add_argument("--ids", help="dossiers à signer, séparés par des virgules (défaut : tous ceux en attente)")
    s.add_argument("--token-label", required=True, help="nom du support de signature")
    s.add_argument("--key-label", help="libellé de la clé sur le support (s'il en porte plusieurs)")
    s.add_argument("--module", help=f"bibliothèque PKCS#11 du support (défaut : ${tok.MODULE_ENV} ou SoftHSM2)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--pin-stdin", action="store_true", help="lire le code PIN sur l'entrée standard (une ligne)")
    g.add_argument("--pin-prompt", action="store_true", help="demander le code PIN (saisie masquée)")
    s.add_argument("--dernier-essai", action="store_true", help="présenter le PIN même si le support n'accepte plus qu'un essai")
    s.set_defaults(func=cmd_sign)

    ls = sub.add_parser("list", help="ce qui attend ma signature")
    online(ls)
    ls.set_defaults(func=cmd_list)
    sh = sub.add_parser("show", help="le détail d'un dossier (et son document)")
    online(sh)
    sh.add_argument("dossier")
    sh.add_argument("--document", help="écrire le document dans ce fichier")
    sh.set_defaults(func=cmd_show)
    rj = sub.add_parser("reject", help="refuser de signer, avec un motif")
    online(rj)
    rj.add_argument("dossier")
    rj.add_argument("--motif", required=True)
    rj.set_defaults(func=cmd_reject)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "sign":
        if args.prepared and not args.out:
            _err("--out est obligatoire avec --prepared.")
            return 2
        if not args.prepared and not args.url:
            _err("indiquez --prepared (hors ligne) ou --url (plateforme).")
            return 2
    try:
        return args.func(args)
    except BadInput as exc:
        _err(str(exc))
        return 2
    except tok.WrongPin as exc:
        _err(str(exc))
        return 3
    except tok.TokenError as exc:
        _err(str(exc))
        return 4
    except ApiError as exc:
        _err(str(exc))
        return 5 if exc.status is None else 1
    finally:
        tok.reset()
