"""Tell a webhook how a run ended: one short JSON POST (``--notify URL``).

The message is the outcome in a few fields (:func:`~batchgen.outcome.summary.outcome_fields`:
exit code, jobs, cost, where the report is) and a ``text`` line for people, which is
what Slack-style incoming webhooks (Slack, Mattermost, Rocket.Chat, Discord's
``/slack`` endpoint) show. It is sent once, at the end of every run that took its
output folder (a refusal over ``--budget`` included), and it is

- bounded: at most :data:`NOTIFY_TIMEOUT` seconds in all (connect, send, answer), a
  body of a few KiB (texts cut at :data:`MAX_TEXT` characters), the answer read no
  further than the chunk that passes :data:`MAX_ANSWER` bytes, no redirect followed;
- never fatal: whatever goes wrong is a warning, and the run's exit code stays its own;
- quiet about the URL, which is a secret (a Slack webhook's path is its token): it is
  never logged (the request does not go through ``httpx``'s client, which logs every
  URL), never written (not in the ledger, ``summary.json`` or the report), and messages
  name only its scheme and host.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any

import anyio
import httpx

from batchgen import __version__
from batchgen.errors import UsageError
from batchgen.outcome.summary import Summary, outcome_fields, outcome_line
from batchgen.output.jsontext import dumps
from batchgen.output.layout import SUMMARY_JSON

__all__ = [
    "MAX_ANSWER",
    "MAX_TEXT",
    "NOTIFY_TIMEOUT",
    "NOTIFY_URL_ENV",
    "check_notify_url",
    "message",
    "send",
    "where",
]

log = logging.getLogger("batchgen")

NOTIFY_URL_ENV = "BATCHGEN_NOTIFY_URL"  # the command line's default for --notify (keeps it out of `ps`)
NOTIFY_TIMEOUT = 10.0
MAX_TEXT = 1000
MAX_ANSWER = 1024


def where(url: str) -> str:
    """The part of ``url`` a message may show: ``https://hooks.slack.com`` (no path, no user)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}"


def _hidden(text: str, url: str) -> str:
    """``text`` with the URL, and its path, query and user, replaced by what :func:`where` shows."""
    parts = urllib.parse.urlsplit(url)
    text = text.replace(url, where(url))
    for secret in (parts.path, parts.query, parts.username, parts.password):
        if secret and len(secret) > 1:
            text = text.replace(secret, "…")
    return text


def message(summary: Summary, *, name: str | None, manifest: str | None, shard: str | None) -> dict[str, Any]:
    """The notification of a run's outcome: ``text`` for people, the rest for programs."""
    return {
        "text": f"batchgen {outcome_line(summary, name)}",
        "batchgen": __version__,
        "name": name,
        "manifest": manifest,
        "shard": shard,
        "out": str(summary.out_dir),
        **outcome_fields(summary),
        "summary": str(summary.out_dir / SUMMARY_JSON),
    }


def check_notify_url(url: str, *, insecure: bool = False) -> str:
    """``url`` if a notification may go there, else :class:`~batchgen.errors.UsageError`
    (that never shows it): ``https://``, or plain ``http://`` to this machine (any host
    with ``insecure``), the same rule as the API's base URL."""
    from batchgen.api.origin import check_base_url

    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("--notify: not an http(s):// URL (it is not shown here: it is treated as a secret)")
    try:
        check_base_url(url.strip(), insecure=insecure, base=False)
    except UsageError:
        raise UsageError(
            f"--notify: plain http:// to {parts.hostname} would send the URL (a secret) unencrypted;"
            " use https://, or --insecure"
        ) from None
    return url.strip()


def _cut(value: Any) -> Any:
    """Strings cut to MAX_TEXT characters, inside mappings too: the body stays small."""
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"
    if isinstance(value, Mapping):
        return {k: _cut(v) for k, v in value.items()}
    return value


async def send(
    url: str,
    message: Mapping[str, Any],
    *,
    within: float = NOTIFY_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str | None:
    """POST ``message`` as JSON to ``url`` within ``within`` seconds: None once a 2xx answer
    came, else why not (in words that never contain the URL). Never raises but for
    cancellation.

    ``transport`` is the one to send through (default: a fresh ``httpx.AsyncHTTPTransport``,
    closed after).
    """
    body = dumps(_cut(message), compact=True).encode("utf-8")  # strict JSON, the key taken out
    own = transport is None
    sender = transport or httpx.AsyncHTTPTransport(retries=0)
    request = httpx.Request(
        "POST",
        url,
        content=body,
        headers={"content-type": "application/json", "user-agent": f"batchgen/{__version__}"},
        extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), within)},
    )
    try:
        with anyio.fail_after(within):
            response = await sender.handle_async_request(request)
            answer = b""
            try:
                async for chunk in response.stream:  # type: ignore[union-attr]
                    answer += chunk
                    if len(answer) >= MAX_ANSWER:
                        break
            finally:
                await response.aclose()
    except TimeoutError:
        return f"no answer within {within:g} s"
    except Exception as exc:  # a refused connection, TLS, a broken answer: said, never raised
        reason = _hidden(str(exc), url) or type(exc).__name__
        return f"{type(exc).__name__}: {reason}"
    finally:
        if own:
            await sender.aclose()
    if 200 <= response.status_code < 300:
        return None
    said = _hidden(" ".join(answer[:200].decode("utf-8", "replace").split()), url)
    return f"HTTP {response.status_code}" + (f" ({said})" if said else "")
