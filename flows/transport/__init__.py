"""Transports to the counterparts: SFTP with pinned host keys (`sftp`), local folders (`local`).

Errors, split by what the caller should do, live in `flows.transport.errors`.
"""
