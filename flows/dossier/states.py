"""The dossier state machine, declared once as data.

The journal, the UI, the alerts and the DAGs all read this declaration: a state's French label,
whether it is final, whether it is a refusal, and which transitions each flow allows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class State:
    code: str
    label: str  # what an agent reads, in French
    final: bool = False
    refusal: bool = False
    waiting_on: str = ""  # who the dossier waits for in this state ("", "parapheur", "etat", "sae")


STATES: dict[str, State] = {
    s.code: s
    for s in (
        State("recu", "Reçu"),
        State("valide", "Validé"),
        State("refuse_validation", "Refusé à la validation", final=True, refusal=True),
        State("au_parapheur", "Au parapheur", waiting_on="parapheur"),
        State("rejete_parapheur", "Rejeté au parapheur", final=True, refusal=True),
        State("parapheur_expire", "Délai du parapheur dépassé", final=True, refusal=True),
        State("signe", "Signé"),
        State("transmis", "Transmis", waiting_on="etat"),
        State("acquitte", "Acquitté"),
        State("refuse_etat", "Refusé par l'État", final=True, refusal=True),
        State("depose_sae", "Déposé au SAE", waiting_on="sae"),
        State("archive", "Archivé", final=True),
        State("refuse_sae", "Refusé par le SAE", final=True, refusal=True),
        State("annule", "Annulé", final=True),
        State("erreur", "En erreur", final=True, refusal=True),
    )
}

_COMMON: dict[str, tuple[str, ...]] = {
    "recu": ("valide", "refuse_validation", "erreur"),
    "valide": ("au_parapheur", "signe", "erreur"),
    "au_parapheur": ("signe", "rejete_parapheur", "parapheur_expire", "erreur"),
    "signe": ("transmis", "erreur"),
    "transmis": ("acquitte", "refuse_etat", "erreur"),
    "acquitte": ("depose_sae", "erreur"),
    "depose_sae": ("archive", "refuse_sae", "depose_sae", "erreur"),
    "refuse_sae": ("depose_sae",),  # an operator may deposit again after fixing the profile
    "erreur": ("recu", "valide", "signe", "transmis", "acquitte"),  # operator retry of a stuck step
}

FLOWS: dict[str, dict[str, tuple[str, ...]]] = {
    "actes": {
        **_COMMON,
        "acquitte": ("depose_sae", "annule", "erreur"),
        # Annulation (6-1) acknowledged by ARAnnulation (6-2): the transmission is cancelled whatever
        # the archive side has done meanwhile (the SAE copy stays, the dossier says "annulé").
        "transmis": (*_COMMON["transmis"], "annule"),
        "depose_sae": (*_COMMON["depose_sae"], "annule"),
        "archive": ("annule",),
    },
    "helios": dict(_COMMON),
}

FLOW_LABELS = {"actes": "Actes (contrôle de légalité)", "helios": "Hélios (PES V2)"}

# Flow-specific wording of a state, when the generic label is too vague for an agent.
FLOW_STATE_LABELS = {
    ("actes", "transmis"): "Transmis à la préfecture",
    ("actes", "acquitte"): "Accusé de réception reçu (ARActe)",
    ("actes", "refuse_etat"): "Refusé par la préfecture (anomalie)",
    ("helios", "transmis"): "Transmis à la DGFiP",
    ("helios", "acquitte"): "Acquitté par la DGFiP (PES_ACQUIT)",
    ("helios", "refuse_etat"): "Refusé par la DGFiP (PES_ACQUIT)",
}


class TransitionRefused(ValueError):
    """A transition not declared for this flow."""


def label(state: str, flow: str | None = None) -> str:
    if flow and (flow, state) in FLOW_STATE_LABELS:
        return FLOW_STATE_LABELS[(flow, state)]
    return STATES[state].label


def allowed(flow: str, source: str, target: str) -> bool:
    return target in FLOWS[flow].get(source, ())


def check(flow: str, source: str, target: str) -> None:
    if not allowed(flow, source, target):
        raise TransitionRefused(
            f"Transition interdite pour le flux {flow} : « {label(source, flow)} » → « {label(target, flow)} »"
        )


def is_final(state: str) -> bool:
    return STATES[state].final
