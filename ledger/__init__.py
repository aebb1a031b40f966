"""The p2pchat ledger: a small proof-of-work blockchain that acts as the certificate authority.

Core (sans-IO unless noted): :mod:`ledger.params` (network parameters, genesis), :mod:`ledger.records`
(signed identity records), :mod:`ledger.merkle`, :mod:`ledger.blocks`, :mod:`ledger.bindings` (who holds
which IP and nickname), :mod:`ledger.chain` (validation, most-work fork choice, reorgs), :mod:`ledger.pool`
(pending records); IO: :mod:`ledger.store` (SQLite), :mod:`ledger.miner` (mining thread) and
:mod:`ledger.local_ledger` (all of the above behind one lock). The gossip node, light client and command line
live in :mod:`ledger.protocol`, :mod:`ledger.node`, :mod:`ledger.client` and :mod:`ledger.cli`.

Imports: only ``p2pchat.foundation`` from the rest of the project.
"""
