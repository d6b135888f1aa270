"""The figures a run is measured by and how they are printed (one definition each)."""

from __future__ import annotations

import pytest

from batchgen.outcome.figures import format_duration, format_number, per_image, per_minute, percentile


def test_percentile_interpolates_linearly() -> None:
    """p50/p95 use linear interpolation between ranks; empty input has no percentile."""
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0], 0) == 1.0 and percentile([1.0, 2.0], 100) == 2.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="outside 0-100"):
        percentile([1.0], 150)


def test_format_duration() -> None:
    """Durations read as seconds, minutes or hours."""
    assert format_duration(4.24) == "4.2s"
    assert format_duration(83.4) == "1m 23s"
    assert format_duration(3725) == "1h 02m 05s"


def test_rates_are_unknown_without_time_or_images() -> None:
    """Images per minute needs time, a per-image ratio needs an image: else None, printed n/a."""
    assert per_minute(30, 120.0) == 15.0 and per_minute(3, 0.0) is None
    assert per_image(31, 7) == pytest.approx(4.4286, abs=1e-4) and per_image(5, 0) is None
    assert format_number(None, ".1f") == "n/a" and format_number(12.345, ".1f", " s") == "12.3 s"
