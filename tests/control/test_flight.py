"""A job's life as data: the phases, the legal transitions, and what a flight teaches."""

from __future__ import annotations

import pytest

from batchgen.control.flight import Flight, IllegalTransition, Phase
from batchgen.manifest.job import DEFAULT_MODEL, Job, job_key
from batchgen.manifest.params import validate_params


def flight() -> Flight:
    params = validate_params({"prompt": "a fox", "mode": "fast", "steps_num": 30})
    return Flight(Job(index=0, key=job_key(DEFAULT_MODEL, params, {}), model=DEFAULT_MODEL, params=params))


def test_the_happy_path_asks_for_each_request_in_turn() -> None:
    """NEW asks submit, SUBMITTED status, READY result, FETCHED download; SAVED asks nothing."""
    f = flight()
    steps = [f.step]
    f.submitted("r1", sent_at=0.0, accepted_at=0.1)
    steps.append(f.step)
    f.polled("QUEUED", sent_at=1.0, received_at=1.1)
    f.polled("PROCESSING", sent_at=2.0, received_at=2.1)
    steps.append(f.step)
    f.polled("COMPLETED", sent_at=5.0, received_at=5.1, inference_time=3.5)
    steps.append(f.step)
    f.fetched("https://images.example/r1.png")
    steps.append(f.step)
    f.saved()
    assert steps == ["submit", "status", "status", "result", "download"]
    assert f.step is None and f.phase.final
    assert (f.queued_until, f.processing_by, f.pending_until, f.done_by) == (1.0, 2.1, 2.0, 5.1)
    assert f.polls == 3


def test_a_bad_download_goes_back_to_the_result_and_an_expiry_back_to_new() -> None:
    """refetch: FETCHED -> READY (fresh URL); expire: any phase on the server -> NEW, request forgotten."""
    f = flight()
    f.submitted("r1", sent_at=0.0, accepted_at=0.1)
    f.polled("COMPLETED", sent_at=1.0, received_at=1.1)
    f.fetched("https://images.example/r1.png")
    f.refetch()
    assert (f.phase, f.image_url) == (Phase.READY, None)
    f.expire()
    assert (f.phase, f.request_id, f.polls, f.done_by) == (Phase.NEW, None, 0, None)


@pytest.mark.parametrize(
    "move",
    [
        lambda f: f.polled("QUEUED", sent_at=0.0, received_at=0.1),
        lambda f: f.fetched("u"),
        lambda f: f.saved(),
        lambda f: f.refetch(),
        lambda f: f.expire(),
    ],
)
def test_illegal_transitions_raise(move) -> None:  # type: ignore[no-untyped-def]
    """A NEW job cannot be polled, fetched, saved, refetched or expired."""
    with pytest.raises(IllegalTransition):
        move(flight())


def test_final_phases_stay_final() -> None:
    """abandon() leaves SAVED and FAILED alone; fail() from a final phase is illegal."""
    f = flight()
    f.fail()
    f.abandon()
    assert f.phase is Phase.FAILED
    with pytest.raises(IllegalTransition):
        f.fail()


def test_an_observation_is_taught_only_by_a_request_seen_whole() -> None:
    """A completed request yields its latency observation; a resumed one (ledger time) does not."""
    f = flight()
    f.submitted("r1", sent_at=10.0, accepted_at=10.2)
    f.polled("PROCESSING", sent_at=11.0, received_at=11.1)
    f.polled("COMPLETED", sent_at=14.0, received_at=14.1, inference_time=3.0)
    obs = f.observation()
    assert obs is not None
    assert (obs.service_class, obs.service, obs.pending_until, obs.done_by) == (("fast", 30), 3.0, 11.0, 14.1)
    g = flight()
    g.resume("r2", accepted_at=0.0)
    g.polled("COMPLETED", sent_at=1.0, received_at=1.1, inference_time=2.0)
    assert g.observation() is None
