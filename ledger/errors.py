"""Errors of the ledger package, with messages written for a person.

:class:`LedgerError` covers every invalid record, header or block (received from a peer, read from the store
or submitted locally); :class:`StoreError` a ledger database that cannot be used (corrupt, foreign, locked or
holding another network).
"""

from p2pchat.foundation.errors import UserError


class LedgerError(UserError):
    """A record, header or block breaks a ledger rule; ``str()`` says which rule, for a person."""


class StoreError(UserError):
    """The ledger database is damaged, foreign, in use by another process or belongs to another network."""
