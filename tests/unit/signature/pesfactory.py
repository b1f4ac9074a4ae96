"""A small PES_Aller generator for signature tests and the bench.

flows.helios.generate.generate_pes is the project's real generator; this one only has to be
structurally right for signing (bordereaux with Id, EnTete blocks, accents in ISO-8859-1), and
is used when the real one is not available yet.
"""

from __future__ import annotations

NS = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller"


def _bordereau(i: int, pieces: int, kind: str) -> str:
    body = []
    for p in range(1, pieces + 1):
        body.append(
            f"""   <Piece>
    <BlocPiece>
     <InfoPce>
      <IdPce V="{i * 100 + p}"/>
      <TypPce V="01"/>
      <NatPce V="01"/>
      <Obj V="Fourniture n°{p} - entretien des bâtiments"/>
     </InfoPce>
    </BlocPiece>
    <LigneDePiece>
     <BlocLignePiece>
      <InfoLignePce>
       <IdLigne V="1"/>
       <Nature V="6068"/>
       <Fonction V="020"/>
       <MtHT V="{100 + p}.50"/>
      </InfoLignePce>
     </BlocLignePiece>
     <Tiers>
      <InfoTiers>
       <IdTiers V="73282932000074"/>
       <NatIdTiers V="01"/>
       <RefTiers V="T{p}"/>
       <CatTiers V="50"/>
       <NatJur V="03"/>
       <Nom V="SOCIÉTÉ DES EAUX DE L'ÉTANG"/>
      </InfoTiers>
      <Adresse>
       <TypAdr V="1"/>
       <Adr2 V="12 RUE DE L'ÉGLISE"/>
       <CP V="40000"/>
       <Ville V="MONT-DE-MARSAN"/>
       <CodRes V="0"/>
      </Adresse>
     </Tiers>
    </LigneDePiece>
   </Piece>
"""
        )
    return (
        f"""  <Bordereau Id="BORD{kind[0].upper()}{i:05d}">
   <BlocBordereau>
    <Exer V="2026"/>
    <IdBord V="{i}"/>
    <DteBordEm V="2026-11-20"/>
    <TypBord V="01"/>
    <NbrPce V="{pieces}"/>
    <MtCumulAnnuel V="10000.00"/>
    <MtBordHT V="{sum(100 + p for p in range(1, pieces + 1))}.{50 * pieces % 100:02d}"/>
   </BlocBordereau>
"""
        + "".join(body)
        + "  </Bordereau>\n"
    )


def make_pes(
    n_bordereaux: int = 1,
    *,
    kind: str = "depense",
    pieces: int = 1,
    info_dematerialisee: str | None = "0",
    declare_ds: bool = True,
) -> bytes:
    """kind: "depense", "recette" or "both" (n bordereaux in each block)."""
    ns_extra = ' xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xad="http://uri.etsi.org/01903/v1.1.1#"'
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n',
        f'<n:PES_Aller xmlns:n="{NS}"{ns_extra if declare_ds else ""} Id="ID1">\n',
        """ <Enveloppe>
  <Parametres>
   <Version V="2"/>
   <TypFic V="PESALR2"/>
   <NomFic V="PESALR2_TEST_SIGNATURE"/>
  </Parametres>
 </Enveloppe>
 <EnTetePES>
  <DteStr V="2026-11-20"/>
  <IdPost V="040000"/>
  <IdColl V="21400192300018"/>
  <CodCol V="001"/>
  <CodBud V="00"/>
  <LibelleColBud V="COMMUNE DE SAINT-ÉTIENNE-D'ORTHE"/>
 </EnTetePES>
""",
    ]
    blocks = {"depense": ["Depense"], "recette": ["Recette"], "both": ["Depense", "Recette"]}[kind]
    for block in blocks:
        info = f'\n   <InfoDematerialisee V="{info_dematerialisee}"/>' if info_dematerialisee is not None else ""
        parts.append(f' <PES_{block}Aller>\n  <EnTete{block}>\n   <IdVer V="2"/>{info}\n  </EnTete{block}>\n')
        parts.extend(_bordereau(i, pieces, block.lower()) for i in range(1, n_bordereaux + 1))
        parts.append(f" </PES_{block}Aller>\n")
    parts.append("</n:PES_Aller>\n")
    return "".join(parts).encode("iso-8859-1")


def one_bordereau_pes(n: int = 1) -> bytes:
    return make_pes(n)
