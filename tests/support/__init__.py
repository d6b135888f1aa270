"""Helpers the tests share: virtual time, in-process runs, real processes, reading OUT."""
