"""Fixtures for the SEDA tests: an acte dossier and a PES dossier, generated here (no reference copies)."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, date, datetime

import pytest

from flows.archive.seda import ArchiveFile, ArchiveRequest
from flows.config.models import ArchiveProfile

XMP_PDFA1B = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/"><pdfaid:part>1</pdfaid:part>'
    b"<pdfaid:conformance>B</pdfaid:conformance></rdf:Description></rdf:RDF></x:xmpmeta>"
)


def fake_pdf(text: str, version: str = "1.4", *, pdfa: bool = False, padding: int = 0) -> bytes:
    body = f"%PDF-{version}\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n% {text}\n".encode("latin-1", "replace")
    if padding:
        body += b"% " + (b"x" * padding) + b"\n"
    if pdfa:
        body += b"2 0 obj << /Type /Metadata /Subtype /XML >> stream\n" + XMP_PDFA1B + b"\nendstream endobj\n"
    return body + b"%%EOF\n"


ARACTE = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
    '<actes:ARActe xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216" '
    'actes:IDActe="040-213401234-20240102-2024_12-DE" actes:DateReception="2024-01-03">'
    "<actes:ActeRecu actes:Date=\"2024-01-02\" actes:NumeroInterne=\"2024_12\" actes:CodeNatureActe=\"1\">"
    "<actes:Objet>Budget primitif - exercice 2024</actes:Objet></actes:ActeRecu></actes:ARActe>\n"
).encode("iso-8859-1")

PES = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n<PES_Aller><Enveloppe><Parametres><NomFic V="PESALR2_2134012340001_240105_001"/>'
    "</Parametres></Enveloppe><EnTetePES><IdColl V=\"21340123400017\"/><CodCol V=\"123\"/><CodBud V=\"01\"/><IdPost V=\"040000\"/>"
    "</EnTetePES><PES_DepenseAller><Bordereau><BlocBordereau><Exer V=\"2024\"/><IdBord V=\"1\"/></BlocBordereau>"
    "<Piece><BlocPiece><LibPce V=\"Fournitures scolaires é\"/></BlocPiece></Piece></Bordereau></PES_DepenseAller></PES_Aller>\n"
).encode("iso-8859-1")

PES_ACQUIT = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n<PES_ACQUIT><Enveloppe/><EnTetePES/><ACQUIT><ElementACQUIT>'
    '<DomaineAck V="1"/><EtatAck V="1"/><NomFic V="PESALR2_2134012340001_240105_001"/></ElementACQUIT></ACQUIT></PES_ACQUIT>\n'
).encode("iso-8859-1")

AT = datetime(2024, 1, 8, 9, 30, tzinfo=UTC)


def acte_request(**overrides) -> ArchiveRequest:
    journal = json.dumps(
        [
            {"at": "2024-01-02T10:00:00+00:00", "event": "recu"},
            {"at": "2024-01-03T08:00:00+00:00", "event": "acquitte", "idacte": "040-213401234-20240102-2024_12-DE"},
        ],
        ensure_ascii=False,
    ).encode()
    files = [
        ArchiveFile("Délibération 2024_12.pdf", fake_pdf("deliberation", pdfa=True), role="document",
                    date=datetime(2024, 1, 2, 10, 0, tzinfo=UTC), title="Délibération budget primitif 2024"),
        ArchiveFile("Annexe 1 - budget.pdf", fake_pdf("annexe 1", "1.7"), role="annexe"),
        ArchiveFile("Annexe 2 - état de la dette.pdf", fake_pdf("annexe 2"), role="annexe"),
        ArchiveFile("ARActe.xml", ARACTE, role="acquittement", date=date(2024, 1, 3)),
        ArchiveFile("Lettre préfecture.pdf", fake_pdf("courrier"), role="courrier"),
        ArchiveFile("journal.json", journal, role="journal"),
    ]
    values = dict(
        dossier_id="040-213401234-20240102-2024_12-DE",
        title="Délibération 2024_12 : budget primitif 2024",
        flow="actes",
        doc_type="deliberation",
        collectivite_name="Commune de Saint-Étienne-d'Orthe",
        collectivite_siren="213401234",
        profile=ArchiveProfile(archival_agreement="ACC-ACTES-040", archival_profile="PR-ACTES", dua_years=10),
        start_date=date(2024, 1, 2),
        end_date=date(2024, 1, 3),
        files=files,
        keywords=["7.1 Décisions budgétaires", ("Saint-Étienne-d'Orthe", "geogname")],
        archival_agency="AD040",
        transferring_agency="DEMAT",
        transfer_date=AT,
    )
    values.update(overrides)
    return ArchiveRequest(**values)


def pes_request(**overrides) -> ArchiveRequest:
    report = "<!doctype html><html><body><h1>Rapport qualité des tiers</h1><p>0 anomalie bloquante</p></body></html>"
    files = [
        ArchiveFile("PESALR2_2134012340001_240105_001.xml", PES, role="document"),
        ArchiveFile("PES_ACQUIT_240105_001.xml", PES_ACQUIT, role="acquittement"),
        ArchiveFile("rapport-qualite.html", report.encode(), role="rapport"),
    ]
    values = dict(
        dossier_id="PESALR2_2134012340001_240105_001",
        title="Flux PES dépenses du 5 janvier 2024",
        flow="helios",
        doc_type="pes_depense",
        collectivite_name="Commune de Saint-Étienne-d'Orthe",
        collectivite_siren="213401234",
        profile=ArchiveProfile(archival_agreement="ACC-HELIOS-040", final_action="Destroy", dua_years=10),
        start_date=date(2024, 1, 5),
        end_date=date(2024, 1, 6),
        files=files,
        archival_agency="AD040",
        transfer_date=AT,
    )
    values.update(overrides)
    return ArchiveRequest(**values)


AGREEMENTS = {"ACC-ACTES-040", "ACC-HELIOS-040"}


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def make_tar_gz(members: list[tuple[str, bytes] | tarfile.TarInfo]) -> bytes:
    """A tar.gz with exactly these members (names taken as given, even hostile ones)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
                continue
            name, data = m
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def repack(data: bytes, *, drop=(), replace=None, add=(), rename=None) -> bytes:
    """Rebuild a tar.gz package with some members dropped, replaced, renamed or added."""
    members = tar_members(data)
    replace = replace or {}
    rename = rename or {}
    out = []
    for name, content in members.items():
        if name in drop:
            continue
        out.append((rename.get(name, name), replace.get(name, content)))
    out.extend(add)
    return make_tar_gz(out)


@pytest.fixture
def acte():
    return acte_request()


@pytest.fixture
def pes():
    return pes_request()
