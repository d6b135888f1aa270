"""Parameters inside images: A1111 infotext and batchgen JSON, inserted without touching pixels."""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sd_parsers import ParserManager

from batchgen.output.embed import ImageInfo, embed, infotext, read_info
from batchgen.manifest.params import validate_params
from batchgen.output.images import open_part

# AUTOMATIC1111's own grammar for infotext (modules/infotext_utils.py,
# parse_generation_parameters), transcribed: prompt lines, "Negative prompt:" lines,
# then a last line of `Key: value` pairs, a value either a JSON string or up to a comma.
_A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_A1111_SIZE = re.compile(r"^(\d+)x(\d+)$")


def parse_a1111(text: str) -> dict[str, str]:
    """A1111's parse_generation_parameters: {"Prompt", "Negative prompt", key: value, "Size-1", ...}."""
    result: dict[str, str] = {}
    prompt, negative, done = "", "", False
    *lines, last = text.strip().split("\n")
    if len(_A1111_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done = True
            line = line[16:].strip()
        if done:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    for key, value in _A1111_PARAM.findall(last):
        if value[:1] == '"' and value[-1:] == '"':
            value = json.loads(value)
        size = _A1111_SIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    result["Prompt"], result["Negative prompt"] = prompt, negative
    return result


def make_image(fmt: str, size: tuple[int, int] = (40, 24), **save: Any) -> bytes:
    """A small image with structure in every pixel, encoded as ``fmt``."""
    image = Image.new("RGB", size)
    image.putdata(
        [((x * 7) % 256, (y * 11) % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])]
    )
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as im:
        return im.mode, im.size, im.tobytes()


def make_info(prompt: str = "A red fox, snow", labels: dict[str, Any] | None = None) -> ImageInfo:
    params = validate_params(
        {
            "prompt": prompt,
            "seed": 42,
            "aspect_ratio": "4:5",
            "negative_prompt": "blur, text",
            "steps_num": 30,
        }
    )
    return ImageInfo(
        key="ab" * 32,
        request_id="req-1",
        index=3,
        model="bria-text-to-image",
        params=params.to_api(),
        labels=labels if labels is not None else {"sku": "SKU/021"},
        manifest_sha256="cd" * 32,
        version="0.1.0",
    )


def test_png_carries_parameters_and_json_with_pixels_untouched() -> None:
    """PNG: info['parameters'] is A1111 infotext, info['batchgen'] the JSON; decoded pixels identical."""
    data = make_image("PNG")
    info = make_info()
    out = embed(data, "PNG", info, width=40, height=24)
    assert out is not None and out != data
    assert pixels(out) == pixels(data)
    with Image.open(io.BytesIO(out)) as im:  # read at open: the chunks come before the image data
        assert im.info["parameters"] == infotext(info, width=40, height=24)
        assert json.loads(im.info["batchgen"]) == info.to_json()


def test_infotext_reads_back_with_a1111_grammar() -> None:
    """A1111's parser recovers prompt, negative prompt, steps, CFG, seed, size, model and Bria's own."""
    info = make_info()
    parsed = parse_a1111(infotext(info, width=512, height=640))
    assert parsed["Prompt"] == "A red fox, snow"
    assert parsed["Negative prompt"] == "blur, text"
    assert (parsed["Steps"], parsed["CFG scale"], parsed["Seed"]) == ("30", "7", "42")
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "640")
    assert parsed["Model"] == "bria-text-to-image"
    assert parsed["Aspect ratio"] == "4:5"  # quoted: it holds a colon
    assert (parsed["Mode"], parsed["Medium"], parsed["Prompt enhancement"]) == ("base", "photography", "true")
    assert parsed["Request id"] == "req-1"


def test_png_is_read_by_sd_parsers() -> None:
    """An independent reader (sd-parsers) recognises the PNG as A1111's and finds the settings."""
    out = embed(make_image("PNG"), "PNG", make_info(), width=40, height=24)
    assert out is not None
    prompt_info = ParserManager().parse(io.BytesIO(out))
    assert prompt_info is not None and prompt_info.generator.name == "AUTOMATIC1111"
    sampler = prompt_info.samplers[0]
    assert sampler.parameters["seed"] == "42" and sampler.parameters["steps"] == "30"
    assert [p.value for p in sampler.prompts] == ["A red fox, snow"]
    assert sampler.model is not None and sampler.model.name == "bria-text-to-image"


def test_non_latin_text_goes_in_itxt() -> None:
    """Text that is not Latin-1 (a label 日本の急須) is stored as UTF-8 iTXt and reads back."""
    info = make_info(labels={"name": "日本の急須"})
    out = embed(make_image("PNG"), "PNG", info, width=40, height=24)
    assert out is not None and b"iTXtbatchgen" in out and b"tEXtparameters" in out
    with Image.open(io.BytesIO(out)) as im:
        assert json.loads(im.info["batchgen"])["labels"] == {"name": "日本の急須"}


def test_embedding_twice_replaces() -> None:
    """A second embed replaces the first: one parameters chunk, the new values."""
    once = embed(make_image("PNG"), "PNG", make_info("first"), width=40, height=24)
    assert once is not None
    twice = embed(once, "PNG", make_info("second"), width=40, height=24)
    assert twice is not None and twice.count(b"tEXtparameters") == 1
    with Image.open(io.BytesIO(twice)) as im:
        assert im.info["parameters"].startswith("second\n")


def test_jpeg_carries_json_comment_and_exif_user_comment_with_pixels_untouched() -> None:
    """JPEG: JSON in a COM segment, infotext in EXIF UserComment; the entropy-coded data is untouched."""
    data = make_image("JPEG", quality=90)
    info = make_info()
    out = embed(data, "JPEG", info, width=40, height=24)
    assert out is not None
    assert pixels(out) == pixels(data)
    assert out.endswith(data[data.index(b"\xff\xdb") :])  # everything from the first DQT on: same bytes
    with Image.open(io.BytesIO(out)) as im:
        assert json.loads(im.info["comment"]) == info.to_json()
        user_comment = im.getexif().get_ifd(0x8769)[0x9286]
    assert user_comment[:8] == b"UNICODE\0"
    assert user_comment[8:].decode("utf-16-be") == infotext(info, width=40, height=24)
    prompt_info = ParserManager().parse(io.BytesIO(out))
    assert prompt_info is not None and prompt_info.samplers[0].parameters["seed"] == "42"


def test_jpeg_with_its_own_exif_keeps_it() -> None:
    """A JPEG that already has EXIF keeps it as it is; the JSON still goes in a COM segment."""
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    data = make_image("JPEG", exif=exif.tobytes())
    out = embed(data, "JPEG", make_info(), width=40, height=24)
    assert out is not None and out.count(b"Exif\0\0") == 1
    with Image.open(io.BytesIO(out)) as im:
        assert im.getexif()[0x010F] == "CameraMaker"
        assert json.loads(im.info["comment"])["key"] == "ab" * 32


def test_other_formats_are_left_alone() -> None:
    """WEBP (not a format the API documents) is not touched: embed returns None."""
    assert embed(make_image("WEBP"), "WEBP", make_info(), width=40, height=24) is None


def test_broken_structure_is_a_value_error() -> None:
    """Bytes that are not the format claimed raise ValueError (storage then keeps them as they are)."""
    with pytest.raises(ValueError):
        embed(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 99) + b"IHDR", "PNG", make_info(), width=1, height=1)
    with pytest.raises(ValueError):
        embed(b"not a jpeg", "JPEG", make_info(), width=1, height=1)


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
async def test_storage_hashes_the_file_as_saved(tmp_path: Path, fmt: str) -> None:
    """With info the file carries it and is hashed as saved; without, the bytes are untouched."""
    data = make_image(fmt)
    async with open_part(tmp_path, "with.png") as part:
        await part.write(data)
        saved = await part.commit(info=make_info())
    on_disk = (tmp_path / saved.file).read_bytes()
    assert saved.sha256 == hashlib.sha256(on_disk).hexdigest() and saved.bytes == len(on_disk)
    assert on_disk != data and pixels(on_disk) == pixels(data)
    assert read_info(tmp_path / saved.file) == make_info().to_json()
    async with open_part(tmp_path, "without.png") as part:
        await part.write(data)
        plain = await part.commit()
    assert (tmp_path / plain.file).read_bytes() == data
    assert read_info(tmp_path / plain.file) is None


def run_manifest(tmp_path: Path, image_format: str, *, embed: bool) -> tuple[Path, list[dict[str, Any]]]:
    """Run a 4-job manifest against the in-process emulator; the output folder and its ledger."""
    import anyio

    from batchgen.emulator import EmulatorConfig
    from batchgen.engine.runner import run
    from batchgen.engine.settings import RunSettings

    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "name: embed\ndefaults:\n  mode: fast\n  aspect_ratio: '4:5'\njobs:\n"
        "  - prompt: 'A {thing} on a table'\n    grid:\n      thing: [teapot, 急須]\n      seed: [1, 2]\n"
        "output:\n  filename: '{thing}-{seed}'\n",
        encoding="utf-8",
    )
    out = tmp_path / f"out-{image_format}-{embed}"
    config = EmulatorConfig(time_scale=0.001, workers=8, image_format=image_format, image_size=48)

    async def go() -> None:
        summary = await run(
            manifest, out_dir=out, emulate=config, settings=RunSettings(seed=1, embed=embed), progress=False
        )
        assert summary.exit_code == 0

    anyio.run(go)
    events = [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
    return out, events


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_every_image_of_a_run_carries_what_the_ledger_says(tmp_path: Path, image_format: str) -> None:
    """Each image's embedded JSON and infotext match its ledger lines, which hash the saved file."""
    out, events = run_manifest(tmp_path, image_format, embed=True)
    started = next(e for e in events if e["event"] == "run_started")
    submitted = {e["key"]: e for e in events if e["event"] == "submitted"}
    completed = [e for e in events if e["event"] == "completed"]
    assert len(completed) == 4
    for done in completed:
        path = out / done["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == done["sha256"]
        sent = submitted[done["key"]]
        info = read_info(path)
        assert info is not None
        assert info["key"] == done["key"] and info["request_id"] == done["request_id"]
        assert info["params"] == sent["params"] and info["labels"] == sent["labels"]
        assert info["index"] == sent["index"] and info["manifest_sha256"] == started["manifest_sha256"]
        with Image.open(path) as im:
            text = (
                im.info["parameters"]
                if im.format == "PNG"
                else im.getexif().get_ifd(0x8769)[0x9286][8:].decode("utf-16-be")
            )
            size = im.size
        parsed = parse_a1111(text)
        assert parsed["Prompt"] == sent["params"]["prompt"] and parsed["Seed"] == str(sent["seed"])
        assert (int(parsed["Size-1"]), int(parsed["Size-2"])) == size


def test_no_embed_keeps_the_downloaded_bytes(tmp_path: Path) -> None:
    """With embed off every file is byte for byte what the server sent."""
    from batchgen.emulator.images import render_image
    from batchgen.emulator.jobs import params_key

    out, events = run_manifest(tmp_path, "png", embed=False)
    submitted = {e["key"]: e for e in events if e["event"] == "submitted"}
    for done in (e for e in events if e["event"] == "completed"):
        params = validate_params(submitted[done["key"]]["params"])
        sent = render_image(
            params, key=params_key("bria-text-to-image", params), image_format="png", long_side=48
        )
        assert (out / done["file"]).read_bytes() == sent
        assert read_info(out / done["file"]) is None
