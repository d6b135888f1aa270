"""Everything under OUT.

The ledger (format, writer, replay, resume rule), the lock and folder checks, image
files, embedded parameters.
"""
