"""Airflow adapters for demat: triggers, operators, connections, the UI plugin.

This package is installed (pip install -e .) so that the triggerer imports the inbox trigger from
outside the DAG bundle, as Airflow requires.
"""
