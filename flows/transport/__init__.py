"""Transports to the counterparts: SFTP with pinned host keys (`sftp`), local folders (`local`)."""

from flows.transport.errors import (
    AuthenticationRefused,
    HostKeyMismatch,
    PermanentTransportError,
    RemoteConflict,
    RemoteNotFound,
    RemotePermissionDenied,
    RemoteTooLarge,
    TransientError,
    TransportError,
    TransportUnavailable,
)

__all__ = [
    "AuthenticationRefused",
    "HostKeyMismatch",
    "PermanentTransportError",
    "RemoteConflict",
    "RemoteNotFound",
    "RemotePermissionDenied",
    "RemoteTooLarge",
    "TransientError",
    "TransportError",
    "TransportUnavailable",
]
