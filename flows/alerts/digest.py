"""One French mail gathering every pending alert of one recipient: a subject that counts them, and
a body that lists each dossier with what happened, why, what to do and its link."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape as _escape

from flows.alerts.models import KINDS, Alert
from flows.alerts.wording import one_line, when
from flows.config import PlatformConfig

PLATFORM = "la plateforme"


def escape(text: str, quote: bool = False) -> str:
    """HTML text (quote=True for attribute values): every value is data, never markup."""
    return _escape(text, quote=quote)


@dataclass(frozen=True)
class Composed:
    subject: str
    text: str
    html: str


def _coll_name(config: PlatformConfig, slug: str | None) -> str:
    if not slug:
        return PLATFORM
    try:
        return config.collectivite(slug).name
    except KeyError:
        return slug


def _joined(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} et {names[1]}"
    return f"{len(names)} collectivités"


def _period(minutes: int) -> str:
    if minutes == 60:
        return "une fois par heure"
    if minutes % 60 == 0:
        return f"une fois toutes les {minutes // 60} heures"
    return f"une fois toutes les {minutes} minutes"


def compose(alerts: list[Alert], config: PlatformConfig, *, digest_minutes: int = 60) -> Composed:
    """The digest for one recipient; `alerts` in any order (grouped by collectivité, oldest first)."""
    groups: dict[str, list[Alert]] = {}
    for a in sorted(alerts, key=lambda a: (a.collectivite is None, a.collectivite or "", a.created_at, a.id)):
        groups.setdefault(_coll_name(config, a.collectivite), []).append(a)
    n = len(alerts)
    plural = "s" if n > 1 else ""
    names = list(groups)
    subject = one_line(f"demat : {n} alerte{plural} pour {_joined(names)}")
    intro = f"demat a {n} alerte{plural} à vous signaler ({', '.join(names)})."
    footer = (f"Message automatique de demat, envoyé au plus {_period(digest_minutes)} à chaque destinataire : "
              "les alertes suivantes sont regroupées dans le prochain message. Merci de ne pas y répondre.")

    text = ["Bonjour,", "", intro, ""]
    html = ['<html><body style="font-family: sans-serif">', "<p>Bonjour,</p>", f"<p>{escape(intro)}</p>"]
    number = 0
    for name, items in groups.items():
        text += [f"== {name} ==", ""]
        html.append(f"<h2>{escape(name)}</h2>")
        html.append(f'<ol start="{number + 1}">')
        for a in items:
            number += 1
            kind = KINDS.get(a.kind, a.kind)
            text.append(f"{number}. [{kind}] {a.subject}")
            text.append(f"   Signalée le {when(a.created_at)}")
            text += [f"   {line}" for line in a.text.splitlines()]
            if a.action:
                text.append(f"   Que faire : {a.action}")
            if a.link:
                text.append(f"   Voir : {a.link}")
            text.append("")
            html.append(f"<li><p><strong>[{escape(kind)}] {escape(a.subject)}</strong><br>"
                        f"<small>Signalée le {escape(when(a.created_at))}</small></p>")
            html.append("<p>" + "<br>".join(escape(line) for line in a.text.splitlines()) + "</p>")
            if a.action:
                html.append(f"<p><em>Que faire :</em> {escape(a.action)}</p>")
            if a.link:
                html.append(f'<p><a href="{escape(a.link, quote=True)}">{escape(a.link)}</a></p>')
            html.append("</li>")
        html.append("</ol>")
    text += ["-- ", footer]
    html += [f'<hr><p style="color: #666"><small>{escape(footer)}</small></p>', "</body></html>"]
    return Composed(subject, "\n".join(text) + "\n", "\n".join(html) + "\n")
