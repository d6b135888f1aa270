"""Field templates: plain ``{name}`` substitution, nothing more (filenames, and prompts once
their dynamic parts are chosen).

A template is literal text with fields ``{name}`` or ``{name:05d}`` (zero padding to a
width; ``{name:5d}`` pads with spaces). ``{{`` and ``}}`` are literal braces. There is
no attribute or index access and no other format spec: a template can only look names
up in a mapping of plain values, never reach a Python object. That is why this is a
tiny parser of its own and not ``str.format``.

A prompt may also hold dynamic parts (``{red|green}``, ``__colours__``, ``${season}``):
:mod:`batchgen.manifest.dynamic` parses those, reading a field with :func:`parse_field`
(the field rule lives here only), and each prompt it chooses is a field template again,
written back by :meth:`Template.from_parts`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from batchgen.errors import TemplateError

__all__ = ["FIELD", "Field", "Template", "parse_field", "parse_template", "render_value"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SPEC = re.compile(r"(0?)([1-9][0-9]?)d")
# What reads as a field where a prompt's braces may also open a variant: a name, then an
# optional format spec without a variant's ``|``, ``$`` or braces.
FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)(?::([^{}|$]*))?\}")


@dataclass(frozen=True, slots=True)
class Field:
    """One ``{name}`` field: the name, and the padding of ``{name:05d}`` (width 0: none)."""

    name: str
    width: int = 0
    fill: str = " "

    @property
    def text(self) -> str:
        """The field as written: ``{name}``, ``{name:05d}``, ``{name:5d}``."""
        if not self.width:
            return f"{{{self.name}}}"
        return f"{{{self.name}:{'0' if self.fill == '0' else ''}{self.width}d}}"


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal strings and fields, in order."""

    text: str
    parts: tuple[str | Field, ...]

    @classmethod
    def from_parts(cls, parts: Iterable[str | Field]) -> Template:
        """The template of these parts, its text written so that :func:`parse_template` reads it back."""
        merged: list[str | Field] = []
        for part in parts:
            if isinstance(part, str):
                if not part:
                    continue
                if merged and isinstance(merged[-1], str):
                    merged[-1] += part
                    continue
            merged.append(part)
        text = "".join(
            p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else p.text for p in merged
        )
        return cls(text, tuple(merged))

    @property
    def names(self) -> tuple[str, ...]:
        """The field names used, in order of first use."""
        seen: dict[str, None] = {}
        for part in self.parts:
            if isinstance(part, Field):
                seen.setdefault(part.name, None)
        return tuple(seen)

    def render(
        self,
        values: Mapping[str, object],
        *,
        missing: str | None = None,
        convert: Callable[[object], str] | None = None,
    ) -> str:
        """Fill the fields from ``values``; an absent name is ``missing``, or a KeyError if None.

        ``convert`` turns a value into its text (default :func:`render_value`); filenames
        pass :func:`batchgen.manifest.paths.clean_value`, so only the template's own text is
        left as written.
        """
        to_text = convert or render_value
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            if part.name in values:
                text = to_text(values[part.name])
            elif missing is not None:
                text = missing
            else:
                raise KeyError(part.name)
            out.append(text.rjust(part.width, part.fill) if part.width else text)
        return "".join(out)


def render_value(value: object) -> str:
    """How one value reads inside a template: booleans as true/false, numbers as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_field(name: str, spec: str | None, *, offset: int = 0) -> Field:
    """The field ``{name}`` or ``{name:spec}``; :class:`TemplateError` (at ``offset``) for a bad spec."""
    if not spec:
        return Field(name)
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise TemplateError(
            f"{{{name}:{spec}}}: the only format allowed is zero padding like {{{name}:05d}}", offset=offset
        )
    return Field(name, int(match.group(2)), "0" if match.group(1) else " ")


def parse_template(text: str) -> Template:
    """Parse ``text``, raising :class:`TemplateError` on anything but ``{name}`` fields."""
    parts: list[str | Field] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "}":
            if text.startswith("}}", i):
                literal.append("}")
                i += 2
                continue
            raise TemplateError(
                f"unmatched '}}' at character {i + 1} (write '}}}}' for a literal brace)", offset=i
            )
        if ch != "{":
            literal.append(ch)
            i += 1
            continue
        if text.startswith("{{", i):
            literal.append("{")
            i += 2
            continue
        end = text.find("}", i + 1)
        if end < 0:
            raise TemplateError(
                f"unmatched '{{' at character {i + 1} (write '{{{{' for a literal brace)", offset=i
            )
        body = text[i + 1 : end]
        name, _, spec = body.partition(":")
        if not _NAME.fullmatch(name):
            raise TemplateError(
                f"{{{body}}} is not a field: use {{name}} with letters, digits, _ or -"
                " (no attribute or index access)",
                offset=i,
            )
        field = parse_field(name, spec, offset=i)
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(field)
        i = end + 1
    if literal:
        parts.append("".join(literal))
    return Template(text, tuple(parts))
