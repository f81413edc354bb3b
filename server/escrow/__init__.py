"""Escrow (先培后付): students' fees held at a bank and released to schools per part the exam side accepted.

``core`` is the pure ledger (accounts, balanced entries in integer fen, invariants, the instruction state table);
``bank`` the adapter to the bank's HTTP interface (``simulators/bank.py`` in tests and the demo); ``service`` the
thin database layer that posts entries, sends instructions and applies callbacks, idempotently.
"""
