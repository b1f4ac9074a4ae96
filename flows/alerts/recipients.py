"""Who must hear about an alert, and at which address.

Recipients are kept as Airflow user names (or literal addresses) and resolved to an address only
when a digest is built: fixing the configuration later delivers what was waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows.config import Collectivite, PlatformConfig, Step
from flows.config.models import EMAIL_RE


@dataclass(frozen=True)
class Resolved:
    address: str | None
    reason: str = ""  # French, when there is no usable address


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))


def operators(config: PlatformConfig, fallback: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The platform's operators: the configured list, else the Airflow operators given by the caller."""
    return _unique(list(config.alerts.operators) or list(fallback))


def for_collectivite(coll: Collectivite) -> list[str]:
    """The collectivité's agents and its contact address."""
    return _unique([*coll.agents, coll.email])


def for_step(coll: Collectivite, step: Step) -> list[str]:
    """Who answers a parapheur step: the signing official's users, or the VISA step's users."""
    if step.kind == "SIGNATURE" and step.official:
        try:
            return _unique(list(coll.official(step.official).users))
        except KeyError:
            return []
    return _unique(list(step.users))


def resolve(config: PlatformConfig, recipient: str, collectivite: str | None = None) -> Resolved:
    """An address for a user name (the collectivité's map, the platform's, then any collectivité's)."""
    if "@" in recipient:
        if not EMAIL_RE.match(recipient):
            return Resolved(None, f"l'adresse « {recipient} » n'est pas une adresse e-mail valide")
        if recipient.lower().endswith((".invalid", ".example.invalid")):
            return Resolved(None, f"l'adresse de contact « {recipient} » est un exemple non renseigné : "
                                  "indiquez la vraie adresse (champ « email » de la collectivité)")
        return Resolved(recipient)
    maps: list[dict[str, str]] = []
    colls = {c.slug: c for c in config.collectivites}
    if collectivite in colls:
        maps.append(colls[collectivite].emails)
    maps.append(config.emails)
    maps.extend(c.emails for c in config.collectivites)
    for emails in maps:
        if recipient in emails:
            return Resolved(emails[recipient])
    return Resolved(None, f"aucune adresse e-mail connue pour l'utilisateur « {recipient} » : ajoutez-la dans "
                          "« emails » de sa collectivité ou de la plateforme (configuration)")
