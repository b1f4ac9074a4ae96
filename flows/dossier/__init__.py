"""Dossiers: records, their declared state machine, the append-only journal, artefacts."""
