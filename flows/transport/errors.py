"""Transport errors, split by what the caller should do.

`TransientError` means "retry later with backoff" (network, counterpart down); every other
`TransportError` is permanent: retrying the same call cannot succeed and an operator must act.
Messages are in French because they end up in the dossier journal an agent reads.
"""

from __future__ import annotations


class TransportError(Exception):
    """Base of every error raised by flows.transport."""


class TransientError(TransportError):
    """A fault that may go away by itself: retry with backoff."""


class TransportUnavailable(TransientError):
    """The counterpart cannot be reached right now (refused, timeout, connection lost)."""


class PermanentTransportError(TransportError):
    """A fault that a retry will not fix."""


class HostKeyMismatch(PermanentTransportError):
    """The server's host key is not the pinned one: possible interception, never auto-accepted."""


class AuthenticationRefused(PermanentTransportError):
    """The server refused our key (wrong user, key not authorised)."""


class RemoteConflict(PermanentTransportError):
    """A remote file already exists under that name with different content."""


class RemoteTooLarge(PermanentTransportError):
    """A remote file exceeds the size cap the caller accepts."""


class RemoteNotFound(PermanentTransportError, FileNotFoundError):
    """The remote path does not exist."""


class RemotePermissionDenied(PermanentTransportError, PermissionError):
    """The server refused the operation (outside the account's root, read-only...)."""


class InvalidRemoteName(PermanentTransportError, ValueError):
    """A file name that could escape its folder or would be hidden (/, .., leading dot)."""
