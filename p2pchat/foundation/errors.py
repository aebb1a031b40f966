"""Exceptions a user can cause, with messages written for a person.

Everything a peer, a file or a command line can get wrong raises a subclass of :class:`UserError`; the edges
(CLI, GUI, connection handlers) catch ``UserError`` and show ``str(exc)``. Programming errors use the
built-in exceptions and are never caught broadly.

Whose fault it is decides what happens next, so three bases tell them apart:

- :class:`PeerFault` — a peer (or someone on the path) sent something wrong: its session ends and it is told why;
- :class:`LocalFault` — this machine failed (disk full, key file unreadable, port taken): the user is told, and
  no peer is blamed or penalised for it;
- :class:`UsageError` — the user asked for something that cannot be done now: refused with the reason, and
  nothing ends because of it.

:class:`PeerUnreachable` is none of the three: the network between us failed, and nobody can say whose fault
that is.
"""


class UserError(Exception):
    """An error caused by input, a peer or the environment; ``str()`` is meant for a person."""


class PeerFault(UserError):
    """A peer, or someone on the path, sent something wrong."""


class LocalFault(UserError):
    """This machine failed: a disk, a file, a port; never the peer's doing."""


class UsageError(UserError):
    """The user asked for something that cannot be done (now)."""


class FrameError(PeerFault):
    """A frame on the wire was malformed, oversized, of an unknown type or missing fields."""


class ProtocolError(PeerFault):
    """A peer broke the protocol: wrong step order, wrong version or network, bad values."""


class CryptoError(PeerFault):
    """A signature, key or ciphertext failed to verify."""


class IdentityError(LocalFault):
    """The identity key file is missing, unreadable, locked or has unsafe permissions."""


class AddressError(UsageError):
    """An address given by the user or a peer is not a valid IP address or port."""


class PeerUnreachable(UserError):
    """A peer could not be reached, refused the connection or stopped answering."""
