"""Hélios (PES V2): read, validate, inspect and generate PES_Aller files; read and build acquits.

PES_Aller files can weigh hundreds of megabytes: everything here streams (lxml iterparse,
elements cleared as soon as they are read), so memory stays flat whatever the file size.
"""

from __future__ import annotations

NS_ALLER = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/aller"
NS_ACQUIT = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/retour/v2"
NS_RETOUR = "http://www.minefi.gouv.fr/cp/helios/pes_v2/Rev0/retour"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
