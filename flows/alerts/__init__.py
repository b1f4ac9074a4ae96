"""E-mail alerts: refusals, stuck dossiers, parapheur deadlines, certificates, sent as hourly digests.

`record` turns facts (journal entries, waits, deadlines, certificate dates) into alerts, once per
fact; `recipients` says who must hear; `digest` writes the French mail; `send` groups what is due
per recipient and hands it to a `Mailer` (Airflow's SMTP notifier in the DAG). No Airflow here.
"""
