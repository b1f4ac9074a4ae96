"""User texts written into Airflow (HITL subject and body, run notes) stay text, whatever they hold.

The body is rendered here with markdown-it in its GFM-like preset (tables, strikethrough and bare
URL autolinks, as Airflow's UI does with react-markdown and remark-gfm): nothing may come out as a
link, an image, a heading, a list or HTML, and the text must read as typed.
"""

from __future__ import annotations

import html
import re

import pytest
from markdown_it import MarkdownIt

from flows.pipeline.steps import md_text, plain_text

HOSTILE = [
    "[Pièce à signer en urgence](https://evil.example/phish)",
    "![suivi](https://evil.example/pixel.png)",
    "Voir https://evil.example/phish et www.evil.example ou maire@evil.example",
    "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "<https://evil.example/autolien>",
    "# Titre\n\n- liste\n1. numéro\n> citation\n\n    code",
    "**gras** _italique_ ~~barré~~ `code` | a | b |\n|---|---|",
    "[ref]: https://evil.example\n[ref]",
    "&lt;b&gt; &#91;x&#93;(https://evil.example) &amp;",
    "facture\u202efdp.exe\u200b\x00\x1b[31m",
    "\\[échappé\\](https://evil.example)",
]

md = MarkdownIt("gfm-like")
# mdast-util-gfm-autolink-literal (remark-gfm, Airflow's UI) links these in text nodes *after* escapes are
# resolved: markdown-it's linkify does not, so the same expressions are checked on the rendered text
GFM_URL = re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.IGNORECASE | re.ASCII)
GFM_EMAIL = re.compile(r"(?<![^\s\W])([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", re.ASCII)


def rendered(text: str) -> str:
    return md.render(f"**Objet** : {md_text(text)}")


def text_nodes(out: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", out))


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_output_holds_no_active_element(text):
    out = rendered(text)
    for tag in ("<a", "<img", "<h1", "<ul", "<ol", "<li", "<blockquote", "<pre", "<code", "<em", "<del", "<table",
                "<script", "<br"):
        assert tag not in out, (tag, text, out)
    assert out.count("<strong>") == 1  # only demat's own label
    assert not GFM_URL.search(text_nodes(out)) and not GFM_EMAIL.search(text_nodes(out)), out


def test_the_gfm_expressions_do_catch_unescaped_links():
    """The check above can fail: plain backslash escaping leaves a URL that remark-gfm would link."""
    escaped_only = "".join(f"\\{c}" if not c.isalnum() and c.isascii() and c != " " else c
                           for c in "voir https://evil.example/p ou a@evil.example")
    shown = text_nodes(md.render(escaped_only))
    assert GFM_URL.search(shown) and GFM_EMAIL.search(shown)


@pytest.mark.parametrize("text", HOSTILE)
def test_text_reads_as_typed(text):
    out = rendered(text)
    shown = text_nodes(out).replace("\u2060", "").strip()  # WORD JOINERs are invisible
    assert shown == f"Objet : {plain_text(text)}"


def test_plain_text_removes_invisible_and_bidi_characters_and_bounds_length():
    assert plain_text("facture\u202efdp.exe") == "facture fdp.exe"
    assert plain_text("a\n\nb\tc\x00d\u2066e") == "a b c d e"
    assert plain_text(None) == ""
    long = plain_text("x" * 1000, 250)
    assert len(long) == 250 and long.endswith("…")
    assert md_text("a" * 600).count("a") == 499  # bounded before escaping: no escape cut in half
    assert md_text("ok.") == "ok\\."


def test_parapheur_request_escapes_the_objet_and_the_file_name(demo_settings):
    """The issue's objet, through the real step that fills Airflow's HITL subject and body."""
    from flows.actes.generate import generate_acte_zip
    from flows.dossier import service
    from flows.dossier.db import session_scope
    from flows.dossier.store import ArtefactStore
    from flows.pipeline import steps

    coll = demo_settings.config.collectivite("saint-sever")
    objet = "[Pièce à signer en urgence](https://evil.example/phish)"
    data = generate_acte_zip(collectivite=coll, numero="DEL2026_77", nature="DE", objet=objet)
    sha = ArtefactStore(demo_settings.store_root).put(data)
    with session_scope(demo_settings.database_url) as s:
        d = service.create(s, collectivite=coll.slug, flow="actes", original_name="![x](https://evil.example/p).zip",
                           sha256=sha, size=len(data))
        dossier_id = d.id
    assert steps.validate(demo_settings, dossier_id).state == "valide"
    req = steps.parapheur_request(demo_settings, dossier_id, step=1)
    assert req.action == "ask"
    assert objet in req.subject  # plain text in Airflow's UI: shown as typed, never rendered
    assert "\n" not in req.subject
    body = md.render(req.body)
    assert "<a" not in body and "<img" not in body
    assert "Pièce à signer en urgence" in body and "evil.example/phish" in html.unescape(body)
    assert "\\[Pièce à signer en urgence\\]\\(https\\:\u2060\\/\\/evil\\.example\\/phish\\)" in req.body
    assert not GFM_URL.search(text_nodes(body))
