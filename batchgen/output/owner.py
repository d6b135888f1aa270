"""Whose output folder this is: a run refuses a folder whose ledger belongs to another batch.

The ledger's last ``run_started`` says which manifest (path and sha256) and which shard
wrote the folder. A run of another shard (shards run one after the other with one
``--out``), or of another manifest, would mix two batches in one ledger: a rerun
would count the other batch's jobs as "no longer in the manifest", ``batchgen status``
and the report would tell neither story. So :func:`check_owner` refuses it
(:class:`~batchgen.errors.UsageError`: exit 2, nothing written), saying which.

The same manifest edited (same path) or moved (same sha256) is the same batch; so is
one moved *and* edited that still has a job the folder has done. Jobs given from
Python record no manifest: only their shard is compared.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from batchgen.errors import UsageError
from batchgen.output.replay import LedgerState

__all__ = ["check_owner"]


def _shard_words(shard: object) -> str:
    return f"shard {shard}" if shard else "the whole batch (no --shard)"


def check_owner(
    state: LedgerState,
    out_dir: Path,
    *,
    manifest: str | None,
    manifest_sha256: str | None,
    shard: str | None,
    keys: Iterable[str],
) -> None:
    """Raise :class:`~batchgen.errors.UsageError` if ``out_dir``'s ledger (replayed as
    ``state``) was written by another shard or another manifest than this run's."""
    latest = state.runs[-1] if state.runs else None
    if latest is None:
        return
    recorded_shard = latest.settings.get("shard") or None
    if recorded_shard != shard:
        raise UsageError(
            f"{out_dir} holds {_shard_words(recorded_shard)} of {latest.manifest or 'jobs given from Python'}"
            f" (its ledger's last run); this run is {_shard_words(shard)}: give each shard its own"
            " --out (the default is output/<name>-shard-K-of-N/), or another folder for this run"
        )
    if manifest is None or latest.manifest is None:
        return
    if manifest == latest.manifest or (manifest_sha256 and manifest_sha256 == latest.manifest_sha256):
        return
    if any(key in state.records for key in keys):
        return  # the same batch, its manifest moved and edited
    raise UsageError(
        f"{out_dir} holds the batch of another manifest, {latest.manifest} (its ledger's last run),"
        f" none of whose jobs are {manifest}'s: give this manifest its own --out"
    )
