"""Segmind over an injected httpx client: the v2 protocol, the wire, the request history.

Never sleeps, never retries: it says what happened.
"""
