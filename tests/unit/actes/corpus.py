"""Every kind of @ctes message, as demat builds them (used by the conformance and validity tests)."""

from __future__ import annotations

from datetime import date

from flows.actes import classification as C
from flows.actes import messages as M
from flows.actes import transmission as T
from flows.actes.model import ActeMetadata, ActeSubmission, Document
from flows.actes.pdf import minimal_pdf

from .conftest import DAY, make_collectivite

CDATE = date(2024, 1, 15)
IDACTE = "040-214002933-20250314-DEL2025_014-DE"


def submission(**over) -> ActeSubmission:
    md = dict(nature="DE", matiere="7.10.2", numero_interne="DEL2025_014",
              objet="Vote des taux d'imposition : « fiscalité » 2025 – œuvre", date_decision=date(2025, 3, 14),
              typologie="99_DE", classification_date=CDATE)
    md.update(over)
    return ActeSubmission(
        metadata=ActeMetadata(**md),
        document=Document("deliberation.pdf", minimal_pdf("Délibération"), "99_DE"),
        annexes=[Document("etat.pdf", minimal_pdf("Annexe 1"), "22_TA"),
                 Document("budget.XML", b"<budget/>", "99_BU")],
    )


def all_messages() -> dict[str, bytes]:
    """label -> XML message, valid by construction."""
    col = make_collectivite()
    out: dict[str, bytes] = {}
    t = T.build_transmission(submission(), col, serial=1, day=DAY)
    out["Acte"] = t.message_xml
    out["EnveloppeCLMISILL"] = t.envelope_xml
    t2 = T.build_transmission(
        submission(matiere="1.1.1.1.1", precedent_idacte="040-214002933-20250101-DEL2025_001-DE",
                   document_papier=True, objet="é" * 499), col, serial=2, day=DAY)
    out["Acte (5 niveaux, précédent, papier)"] = t2.message_xml
    out["Annulation"] = T.build_annulation(IDACTE, col, serial=3, day=DAY).message_xml
    pdf = ("reponse.pdf", minimal_pdf("Réponse"))
    out["ReponseCourrierSimple"] = T.build_reponse_courrier_simple(IDACTE, DAY, col, pdf, serial=4).message_xml
    out["ARDemandePieceComplementaire"] = T.build_ar_demande_pieces(IDACTE, DAY, col, serial=5).message_xml
    out["RefusPieceComplementaire"] = T.build_refus_pieces(IDACTE, DAY, col, pdf, serial=6).message_xml
    out["PieceComplementaire"] = T.build_pieces_complementaires(IDACTE, DAY, col, [pdf, ("b.pdf", b"%PDF-")],
                                                                serial=7).message_xml
    out["ARLettreObservations"] = T.build_ar_lettre_observations(IDACTE, DAY, col, serial=8).message_xml
    out["RejetLettreObservations"] = T.build_rejet_lettre_observations(IDACTE, DAY, col, pdf, serial=9).message_xml
    out["ReponseLettreObservations"] = T.build_reponse_lettre_observations(IDACTE, DAY, col, pdf,
                                                                           serial=10).message_xml
    out["DemandeClassification"] = C.build_demande_classification(col, CDATE, day=DAY).message_xml
    out["DemandeClassification (sans date)"] = C.build_demande_classification_xml(None)
    out["ARActe"] = M.build_aracte(IDACTE, DAY, CDATE, acte_message=out["Acte"]).xml
    out["ARActe (sans acte)"] = M.build_aracte(IDACTE, DAY, CDATE).xml
    out["AnomalieActe"] = M.build_anomalie_acte(IDACTE, "002", "classification pas à jour",
                                                acte_message=out["Acte"], date=DAY, classification_date=CDATE).xml
    out["AnomalieEnveloppe"] = M.build_anomalie_enveloppe(out["EnveloppeCLMISILL"], "001", "enveloppe", date=DAY).xml
    out["CourrierSimple"] = M.build_courrier("2-1", IDACTE, date=DAY).xml
    out["DemandePieceComplementaire"] = M.build_courrier("3-1", IDACTE, date=DAY, description="Le plan").xml
    out["LettreObservations"] = M.build_courrier("4-1", IDACTE, date=DAY, motif="Incompétence").xml
    out["DefereTA"] = M.build_courrier("5-1", IDACTE, date=DAY, nature_illegalite="Vice de forme").xml
    out["ARPieceComplementaire"] = M.build_ar_for("3-4", IDACTE, DAY, date_reception=DAY).xml
    out["ARReponseRejetLettreObservations"] = M.build_ar_for("4-4", IDACTE, DAY, date_reception=DAY).xml
    out["ARAnnulation"] = M.build_ar_for("6-1", IDACTE, date_reception=DAY).xml
    out["EnveloppeMISILLCL"] = M.build_envelope_misillcl("214002933", "040", 2, ["a.xml", "b.xml"])
    out["EnveloppeMISILLCL (préfecture)"] = M.build_envelope_misillcl("214002933", "040", None, ["a.xml"])
    out["RetourClassification"] = C.build_retour_classification(C.national_default(CDATE))
    out["ReponseClassificationSansChangement"] = C.build_reponse_sans_changement(CDATE)
    return out
