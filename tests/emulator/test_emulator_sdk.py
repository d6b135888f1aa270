"""Segmind's own SDK (1.3.0) against the emulator served by uvicorn in a real process."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

segmind = pytest.importorskip("segmind")
from segmind import SegmindClient  # noqa: E402
from segmind.exceptions import SegmindError  # noqa: E402
from segmind.v2 import InferenceFailed  # noqa: E402

from batchgen.manifest.params import aspect_ratio_size  # noqa: E402
from tests.support.processes import EmulatorProcess  # noqa: E402

pytestmark = pytest.mark.e2e

MODEL = "bria-text-to-image"


@pytest.fixture(scope="module")
def _served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """One served emulator for this module: fast jobs, two blocked terms."""
    served = EmulatorProcess(
        ("--time-scale", "0.001", "--blocked-terms", "forbidden,zzz"), tmp_path_factory.mktemp("sdk")
    )
    served.start()
    yield served
    served.stop()


@pytest.fixture
def emulator(_served: EmulatorProcess) -> str:
    """The module's served emulator, reset: as a fresh one for each test."""
    return _served.reset()


@pytest.fixture
def sdk(emulator: str) -> Iterator[SegmindClient]:
    """An SDK client pointed at the emulator's v1 base, closed afterwards."""
    client = SegmindClient(api_key="k", base_url=f"{emulator}/v1")
    yield client
    client._client.close()


def test_submit_async_wait_returns_completed_with_downloadable_image(sdk: SegmindClient) -> None:
    """submit_async(...).wait() ends COMPLETED and its output URL serves a 16:9 PNG."""
    body = sdk.submit_async(MODEL, prompt="a lighthouse at dawn", aspect_ratio="16:9").wait(interval=0.05)
    assert body["status"] == "COMPLETED"
    assert body["metrics"]["inference_time"] > 0
    image = httpx.get(body["output"], timeout=10)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    decoded = Image.open(io.BytesIO(image.content))
    assert decoded.format == "PNG"
    assert decoded.size == aspect_ratio_size("16:9", 512)


def test_run_sync_returns_image_bytes(sdk: SegmindClient) -> None:
    """run_sync posts to /v1/<slug> and gets the image bytes back."""
    response = sdk.run_sync(MODEL, prompt="a red bicycle", aspect_ratio="2:3")
    assert Image.open(io.BytesIO(response.content)).size == aspect_ratio_size("2:3", 512)


def test_bad_parameter_raises_segmind_error_400(sdk: SegmindClient) -> None:
    """An out-of-range parameter is a SegmindError with status 400 naming the field."""
    with pytest.raises(SegmindError) as caught:
        sdk.submit_async(MODEL, prompt="a cat", steps_num=60)
    assert caught.value.status == 400
    assert caught.value.detail is not None and "steps_num" in caught.value.detail


def test_blocked_prompt_raises_inference_failed(sdk: SegmindClient) -> None:
    """A prompt with a blocked term ends FAILED; the SDK raises InferenceFailed with the detail."""
    job = sdk.submit_async(MODEL, prompt="a Forbidden thing")
    with pytest.raises(InferenceFailed) as caught:
        job.wait(interval=0.05)
    assert caught.value.detail is not None and "forbidden" in caught.value.detail


def test_missing_key_gives_401(emulator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client with no key (none given, none in SEGMIND_API_KEY) is refused with 401."""
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    client = SegmindClient(base_url=f"{emulator}/v1")
    try:
        with pytest.raises(SegmindError) as caught:
            client.submit_async(MODEL, prompt="a cat")
    finally:
        client._client.close()
    assert caught.value.status == 401
