"""A syndicat mixte serves 500+ collectivités: one YAML entry each, and no view leaks between them."""

from __future__ import annotations

import yaml
from stdnum import luhn

from flows.config import load_config
from flows.dossier.queries import visible_collectivites

N = 600


def _entry(i: int) -> dict:
    body = f"2{i:07d}"  # 8 digits, the Luhn key makes a valid SIREN
    siren = body + luhn.calc_check_digit(body)
    nic = "0001"
    siret_body = siren + nic
    siret = siret_body + luhn.calc_check_digit(siret_body)
    return {
        "slug": f"commune-{i:03d}", "name": f"Commune n° {i}", "siren": siren, "siret": siret,
        "departement": "040", "arrondissement": 1 + i % 3, "nature": "31", "flows": ["actes"],
        "officials": [{"id": "maire", "name": f"Maire {i}", "role": "Maire", "certificate": f"maire-{i:03d}",
                       "users": [f"maire.{i:03d}"]}],
        "agents": [f"agent.{i:03d}"],
        "circuits": {"acte": [{"kind": "VISA", "users": [f"dgs.{i:03d}"]}, {"kind": "SIGNATURE", "official": "maire"}]},
    }


def test_six_hundred_collectivites_load_and_stay_apart(tmp_path):
    path = tmp_path / "syndicat.yaml"
    path.write_text(yaml.safe_dump({"trigram": "SYN", "collectivites": [_entry(i) for i in range(N)]}))
    config = load_config(path)
    assert len(config.collectivites) == N
    users = config.airflow_users()
    assert len(users) == 3 * N  # agent, DGS (visa), maire per commune
    assert users["dgs.317"] == ("user", "visa au parapheur, Commune n° 317")
    # each user sees exactly their own commune
    for i in (0, 317, N - 1):
        for user in (f"agent.{i:03d}", f"maire.{i:03d}", f"dgs.{i:03d}"):
            assert visible_collectivites(config, user) == {f"commune-{i:03d}"}
    assert visible_collectivites(config, "inconnu") == set()
    assert visible_collectivites(config, "operateur", operators=["operateur"]) is None
    assert config.by_siren(config.collectivites[450].siren).slug == "commune-450"


def test_a_duplicated_slug_among_hundreds_is_named(tmp_path):
    entries = [_entry(i) for i in range(300)]
    entries.append({**_entry(300), "slug": "commune-042"})
    path = tmp_path / "syndicat.yaml"
    path.write_text(yaml.safe_dump({"collectivites": entries}))
    import pytest

    from flows.config import ConfigError

    with pytest.raises(ConfigError, match="« commune-042 » est déclarée deux fois"):
        load_config(path)
