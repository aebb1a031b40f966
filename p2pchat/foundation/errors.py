"""Exceptions a user can cause, with messages written for a person.

Everything a peer, a file or a command line can get wrong raises a subclass of :class:`UserError`; the edges
(CLI, GUI, connection handlers) catch ``UserError`` and show ``str(exc)``. Programming errors use the
built-in exceptions and are never caught broadly.
"""


class UserError(Exception):
    """An error caused by input, a peer or the environment; ``str()`` is meant for a person."""


class FrameError(UserError):
    """A frame on the wire was malformed, oversized, of an unknown type or missing fields."""


class ProtocolError(UserError):
    """A peer broke the protocol: wrong step order, wrong version or network, bad values."""


class CryptoError(UserError):
    """A signature, key or ciphertext failed to verify."""


class IdentityError(UserError):
    """The identity key file is missing, unreadable, locked or has unsafe permissions."""


class AddressError(UserError):
    """An address given by the user or a peer is not a valid IP address or port."""


class PeerUnreachable(UserError):
    """A peer could not be reached, refused the connection or stopped answering."""
