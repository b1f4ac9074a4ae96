"""A self-contained French HTML page of the tiers gate, for a finance agent (no script, no external
resource): one card per tiers to correct, what is wrong, where it appears and how to fix it."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from flows.quality.gate import QualityResult

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:2rem;color:#1b1b1b;max-width:70rem}
h1{font-size:1.5rem;margin-bottom:.2rem} .file{color:#555;word-break:break-all}
.verdict{padding:1rem;border-radius:.4rem;margin:1rem 0;font-weight:600}
.ok{background:#e6f4ea;border-left:6px solid #18753c} .ko{background:#fdecea;border-left:6px solid #ce0500}
.stats{display:flex;gap:1.5rem;flex-wrap:wrap;margin:1rem 0} .stats div{background:#f5f5fe;padding:.6rem 1rem;border-radius:.3rem}
.stats b{display:block;font-size:1.3rem}
.tiers{border:1px solid #ddd;border-radius:.4rem;margin:1rem 0;padding:.8rem 1rem}
.tiers h2{font-size:1.1rem;margin:.2rem 0} .ident{color:#555;font-size:.9rem}
.pb{margin:.6rem 0;padding:.5rem .8rem;border-radius:.3rem}
.pb.error{background:#fdecea} .pb.warning{background:#fff4e5}
.badge{display:inline-block;font-size:.75rem;font-weight:700;padding:.1rem .45rem;border-radius:.2rem;margin-right:.4rem;color:#fff}
.badge.error{background:#ce0500} .badge.warning{background:#b34000}
.fix{margin:.3rem 0 .2rem 0} .fix::before{content:"À corriger : ";font-weight:600}
.value code{background:#eee;padding:0 .2rem} .where{font-size:.85rem;color:#444}
.code{color:#777;font-size:.75rem} .more{color:#555;font-style:italic}
"""


def _kv(label: str, value: object) -> str:
    return f"<div><b>{escape(str(value))}</b>{escape(label)}</div>"


def render_html(result: QualityResult, *, max_tiers: int = 2000, max_places: int = 20) -> str:
    s = result.summary
    n_err, n_warn = s.get("erreurs_bloquantes", 0), s.get("avertissements", 0)
    if result.ok:
        verdict = "Aucune erreur bloquante sur les tiers : le fichier peut être envoyé à Hélios."
        if n_warn:
            verdict += f" {n_warn} avertissement(s) à examiner."
        vclass = "ok"
    else:
        verdict = (
            f"Envoi à Hélios déconseillé : {s.get('tiers_a_corriger', 0)} tiers à corriger "
            f"({n_err} erreur(s) bloquante(s)). Hélios rejetterait le ou les bordereaux concernés."
        )
        vclass = "ko"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="fr"><head><meta charset="utf-8">',
        "<title>Contrôle des tiers avant envoi à Hélios</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Contrôle des tiers avant envoi à Hélios</h1>",
        f'<div class="file">Fichier : {escape(result.file)}</div>',
        f'<div class="verdict {vclass}">{escape(verdict)}</div>',
        '<div class="stats">',
        _kv("occurrences de tiers lues", s.get("tiers_occurrences", 0)),
        _kv("tiers distincts", s.get("tiers_distincts", 0)),
        _kv("erreurs bloquantes", n_err),
        _kv("avertissements", n_warn),
        "</div>",
    ]
    details = result.details
    if details is not None and len(details):
        parts.append(_tiers_cards(details, result, max_tiers=max_tiers, max_places=max_places))
    elif result.findings:
        parts.append("<ul>" + "".join(f"<li>{escape(f.to_text())}</li>" for f in result.findings[:5000]) + "</ul>")
    parts.append(
        '<p class="code">Règles : FACTS Hélios (PES V2) et annotations du XSD PES v5.30. '
        "« Bloquant » : Hélios rejette le bordereau (ou le fichier). "
        "« Avertissement » : à vérifier, n'empêche pas l'envoi.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _tiers_cards(details: pd.DataFrame, result: QualityResult, *, max_tiers: int, max_places: int) -> str:
    messages = {f.rule: (f.message, f.fix) for f in result.findings}
    d = details.copy()
    d["_blocking"] = d["severity"] == "error"
    rank = d.groupby("tiers_key", sort=False).agg(
        blocking=("_blocking", "sum"), n=("rule", "size"), first=("row", "min")
    )
    rank = rank.sort_values(["blocking", "n", "first"], ascending=[False, False, True])
    out = []
    keys = list(rank.index)
    groups = d.groupby("tiers_key", sort=False)
    for key in keys[:max_tiers]:
        g = groups.get_group(key)
        head = g.iloc[0]
        nom = head["Nom"] if isinstance(head["Nom"], str) else "(sans nom)"
        ident = []
        if isinstance(head["IdTiers"], str):
            nat = head["NatIdTiers"] if isinstance(head["NatIdTiers"], str) else "?"
            label = {"01": "SIRET", "02": "SIREN", "03": "FINESS", "04": "NIR"}.get(nat, f"identifiant (type {nat})")
            ident.append(f"{label} {head['IdTiers']}")
        if isinstance(head["RefTiers"], str):
            ident.append(f"référence {head['RefTiers']}")
        cls = "error" if g["_blocking"].any() else "warning"
        out.append(f'<section class="tiers {cls}"><h2>{escape(nom)}</h2>')
        out.append(f'<div class="ident">{escape(" · ".join(ident) or "sans identifiant")}</div>')
        for code, rg in g.groupby("rule", sort=False):
            sev = rg["severity"].iloc[0]
            msg, fix = messages.get(code, ("", ""))
            badge = "Bloquant" if sev == "error" else "Avertissement"
            vals = sorted({v for v in rg["value"] if v})
            places = list(dict.fromkeys(rg["place"]))
            out.append(f'<div class="pb {sev}"><span class="badge {sev}">{badge}</span>{escape(msg)}')
            if vals:
                shown = ", ".join(f"<code>{escape(v)}</code>" for v in vals[:5])
                out.append(f'<div class="value">Valeur lue : {shown}</div>')
            out.append(f'<div class="fix">{escape(fix)}</div>')
            where = "; ".join(escape(p) for p in places[:max_places])
            if len(places) > max_places:
                where += f' <span class="more">et {len(places) - max_places} autre(s) endroit(s)</span>'
            out.append(f'<div class="where">Où : {where}</div><div class="code">{escape(code)}</div></div>')
        out.append("</section>")
    if len(keys) > max_tiers:
        out.append(f'<p class="more">… et {len(keys) - max_tiers} autre(s) tiers (voir le rapport JSON complet).</p>')
    return "\n".join(out)
