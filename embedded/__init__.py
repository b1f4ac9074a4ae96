"""The embedded default: PostgreSQL from a wheel, the simulators and `airflow standalone`, on one machine."""
