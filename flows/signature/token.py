"""Sign digests on a PKCS#11 token (an official's USB token, the seal's HSM; SoftHSM2 in demo and tests).

One login per batch, and never a second attempt with a wrong PIN: the token's retry counter
belongs to its holder, demat must not wear it down. A token that reports its last try or a
locked PIN is not tried at all. A token removed in the middle of a batch keeps what was already
signed; the rest is reported as waiting. The PIN is never logged nor put in a message.

Only `python-pkcs11` and the standard library: the signing agent on the official's workstation
imports this module without the platform's heavy dependencies.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

MODULE_ENV = "DEMAT_PKCS11_MODULE"
SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)

# DER DigestInfo prefixes (RFC 8017 §9.2 note 1): CKM_RSA_PKCS signs DigestInfo || digest
DIGEST_INFO = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
DIGEST_SIZE = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


class TokenError(RuntimeError):
    """A token problem an agent can act on; the message is French and never quotes the PIN."""


class WrongPin(TokenError):
    pass


class PinLocked(TokenError):
    pass


class TokenAbsent(TokenError):
    pass


class KeyNotFound(TokenError):
    pass


def default_module() -> str:
    """The PKCS#11 library: $DEMAT_PKCS11_MODULE, else SoftHSM2 where Debian installs it."""
    env = os.environ.get(MODULE_ENV)
    if env:
        return env
    for candidate in SOFTHSM_MODULES:
        if Path(candidate).exists():
            return candidate
    return SOFTHSM_MODULES[0]


@dataclass(frozen=True)
class TokenConfig:
    """Where the key is: the token's label, the PKCS#11 module, the key (and its certificate) label.

    `softhsm_conf`: a SoftHSM2 configuration file (sets SOFTHSM2_CONF before the module loads).
    """

    label: str
    module: str | None = None
    key_label: str | None = None
    softhsm_conf: str | None = None

    def module_path(self) -> str:
        return self.module or default_module()


@dataclass
class SignOutcome:
    """What one batch gave: signatures by item id, items not signed with the French reason."""

    signatures: dict[str, bytes] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    certificate: bytes = b""  # DER of the key's certificate on the token
    key_type: str = "rsa"
    interrupted: str | None = None  # French reason when the token went away mid-batch


_LIBS: dict[str, object] = {}
_CONF: dict[str, str | None] = {}
_LOCK = threading.Lock()


def _pkcs11():
    try:
        import pkcs11
    except ImportError:  # pragma: no cover - the agent's install brings it
        raise TokenError("La bibliothèque python-pkcs11 n'est pas installée : installez le paquet python-pkcs11.") from None
    return pkcs11


def _lib(config: TokenConfig, *, refresh: bool = False):
    pkcs11 = _pkcs11()
    path = config.module_path()
    with _LOCK:
        conf_changed = config.softhsm_conf is not None and _CONF.get(path) != config.softhsm_conf
        if config.softhsm_conf is not None:
            os.environ["SOFTHSM2_CONF"] = config.softhsm_conf
        lib = _LIBS.get(path)
        if lib is None:
            if not Path(path).exists():
                raise TokenError(
                    f"Module PKCS#11 introuvable : {path}. Installez le pilote du support (SoftHSM2 : paquet softhsm2) "
                    f"ou indiquez son chemin dans {MODULE_ENV}."
                )
            try:
                lib = pkcs11.lib(path)
            except RuntimeError as exc:
                raise TokenError(f"Le module PKCS#11 {Path(path).name} ne se charge pas ({type(exc).__name__}).") from None
            _LIBS[path] = lib
            _CONF[path] = config.softhsm_conf
        elif conf_changed or refresh:
            lib.reinitialize()  # re-reads SOFTHSM2_CONF and rescans the tokens
            _CONF[path] = config.softhsm_conf if config.softhsm_conf is not None else _CONF.get(path)
        return lib


def reset() -> None:
    """Finalise every loaded module (tests, and the agent before exiting)."""
    with _LOCK:
        for lib in _LIBS.values():
            try:
                lib.finalize()
            except Exception:  # noqa: BLE001,S110 - already finalised
                pass
        _LIBS.clear()
        _CONF.clear()


def _get_token(config: TokenConfig):
    pkcs11 = _pkcs11()
    for attempt in (0, 1):
        lib = _lib(config, refresh=attempt == 1)
        try:
            return lib.get_token(token_label=config.label)
        except pkcs11.exceptions.NoSuchToken:
            if attempt == 1:
                raise TokenAbsent(
                    f"Aucun support nommé « {config.label} » n'est branché : insérez la clé USB de signature "
                    "(ou vérifiez le nom du support) puis recommencez."
                ) from None
        except pkcs11.exceptions.MultipleTokensReturned:
            raise TokenError(f"Plusieurs supports portent le nom « {config.label} » : n'en laissez qu'un branché.") from None
    raise AssertionError("unreachable")


def _removed_errors() -> tuple[type[BaseException], ...]:
    exc = _pkcs11().exceptions
    names = ("DeviceRemoved", "TokenNotPresent", "DeviceError", "SessionClosed", "SessionHandleInvalid",
             "ObjectHandleInvalid", "KeyHandleInvalid", "TokenNotRecognised", "CryptokiNotInitialized")
    return tuple(getattr(exc, n) for n in names if hasattr(exc, n))


def pin_guard(flags) -> None:
    """Refuse to present a PIN when the token says it is locked or on its last try."""
    tf = _pkcs11().TokenFlag
    if flags & tf.USER_PIN_LOCKED:
        raise PinLocked(
            "Le code PIN du support est bloqué (trop d'essais erronés) : demat ne tente rien. "
            "Faites-le débloquer avec le code PUK / SO auprès de l'opérateur."
        )
    if flags & tf.USER_PIN_FINAL_TRY:
        raise PinLocked(
            "Le support n'accepte plus qu'un seul essai de code PIN : demat ne le tente pas pour ne pas le bloquer. "
            "Vérifiez votre code puis relancez avec l'option --dernier-essai, ou faites débloquer le support."
        )


def _find_key_and_cert(session, config: TokenConfig):
    pkcs11 = _pkcs11()
    from pkcs11 import Attribute, ObjectClass

    query = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
    if config.key_label:
        query[Attribute.LABEL] = config.key_label
    keys = list(session.get_objects(query))
    if not keys:
        raise KeyNotFound(
            f"Aucune clé privée {'« ' + config.key_label + ' » ' if config.key_label else ''}sur le support "
            f"« {config.label} » : ce n'est pas le support de signature attendu."
        )
    if len(keys) > 1:
        raise KeyNotFound(f"Plusieurs clés privées sur « {config.label} » : précisez laquelle (libellé de la clé).")
    key = keys[0]
    cquery = {Attribute.CLASS: ObjectClass.CERTIFICATE}
    try:
        cquery[Attribute.ID] = key[Attribute.ID]
    except pkcs11.exceptions.PKCS11Error:
        pass
    certs = list(session.get_objects(cquery))
    if not certs and config.key_label:
        certs = list(session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: config.key_label}))
    cert = certs[0][Attribute.VALUE] if certs else b""
    return key, bytes(cert)


def _always_authenticate(key) -> bool:
    from pkcs11 import Attribute

    try:
        return bool(key[Attribute.ALWAYS_AUTHENTICATE])
    except _pkcs11().exceptions.PKCS11Error:  # attribute unknown to this token
        return False


def read_certificate(config: TokenConfig) -> bytes:
    """The DER certificate that goes with the token's signing key (public: no PIN needed)."""
    from pkcs11 import Attribute, ObjectClass

    token = _get_token(config)
    with token.open() as session:
        query = {Attribute.CLASS: ObjectClass.CERTIFICATE}
        if config.key_label:
            query[Attribute.LABEL] = config.key_label
        certs = list(session.get_objects(query))
        if not certs:
            raise KeyNotFound(f"Aucun certificat sur le support « {config.label} » : faites-y installer votre certificat.")
        return bytes(certs[0][Attribute.VALUE])


def _raw_input(key_type: str, algorithm: str, digest: bytes) -> bytes:
    if algorithm not in DIGEST_INFO or len(digest) != DIGEST_SIZE[algorithm]:
        raise ValueError(f"empreinte {algorithm} de longueur {len(digest)} inattendue")
    return DIGEST_INFO[algorithm] + digest if key_type == "rsa" else digest


def sign_digests(
    config: TokenConfig,
    pin: str,
    items: Iterable[tuple[str, str, bytes]],
    *,
    allow_final_try: bool = False,
    on_signed: Callable[[str, int], None] | None = None,
) -> SignOutcome:
    """Sign (item id, digest algorithm, digest) items with ONE login; returns a SignOutcome.

    RSA: CKM_RSA_PKCS over DigestInfo||digest (PKCS#1 v1.5). EC: CKM_ECDSA, value r||s.
    A wrong PIN raises WrongPin after a single attempt (nothing signed). If the token goes away
    mid-batch, the outcome keeps what was signed and lists the rest in `failed`.
    """
    pkcs11 = _pkcs11()
    from pkcs11 import KeyType, Mechanism

    items = list(items)
    token = _get_token(config)
    if not allow_final_try:
        pin_guard(token.flags)
    else:
        pin_guard(token.flags & ~_pkcs11().TokenFlag.USER_PIN_FINAL_TRY)
    try:
        session = token.open(user_pin=pin)
    except pkcs11.exceptions.PinIncorrect:
        raise WrongPin(
            f"Code PIN incorrect pour le support « {config.label} » : rien n'a été signé. "
            "demat n'a fait qu'un essai ; vérifiez le code avant de recommencer (le support se bloque après plusieurs erreurs)."
        ) from None
    except (pkcs11.exceptions.PinInvalid, pkcs11.exceptions.PinLenRange):
        raise WrongPin(f"Code PIN de forme invalide pour le support « {config.label} » : rien n'a été signé.") from None
    except pkcs11.exceptions.PinLocked:
        raise PinLocked(
            f"Le code PIN du support « {config.label} » est bloqué : faites-le débloquer (code PUK / SO)."
        ) from None
    out = SignOutcome()
    removed = _removed_errors()
    try:
        key, cert = _find_key_and_cert(session, config)
        out.certificate = cert
        kt = key.key_type
        out.key_type = "ec" if kt == KeyType.EC else "rsa"
        mechanism = Mechanism.ECDSA if out.key_type == "ec" else Mechanism.RSA_PKCS
        # qualified-signature keys (CKA_ALWAYS_AUTHENTICATE) want the PIN again for each signature:
        # the PIN typed once is re-presented by the agent, never asked twice of the official
        per_signature_pin = pin if _always_authenticate(key) else None
        for n, (item_id, algorithm, digest) in enumerate(items):
            if out.interrupted:
                out.failed[item_id] = out.interrupted
                continue
            try:
                data = _raw_input(out.key_type, algorithm, digest)
            except ValueError as exc:
                out.failed[item_id] = f"Élément « {item_id} » non signé : {exc}."
                continue
            try:
                out.signatures[item_id] = bytes(key.sign(data, mechanism=mechanism, pin=per_signature_pin))
            except removed:
                out.interrupted = (
                    f"Le support « {config.label} » a été retiré ou ne répond plus pendant la signature : "
                    f"{len(out.signatures)} élément(s) signé(s) sont conservés, les autres attendent. "
                    "Rebranchez le support et relancez la signature."
                )
                out.failed[item_id] = out.interrupted
                continue
            if on_signed:
                on_signed(item_id, n)
    finally:
        try:
            session.close()
        except Exception:  # noqa: BLE001,S110 - the token may be gone already
            pass
    return out
