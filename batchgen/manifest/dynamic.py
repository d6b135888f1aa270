"""Dynamic prompts: the sd-dynamic-prompts syntax batchgen reads, parsed into a tree.

A prompt is text with, besides the ``{name}`` fields of :mod:`batchgen.manifest.template`:

- variants ``{red|green|blue}``, weighted ``{0.5::red|green}``, several at once
  ``{2$$a|b|c}``, ``{1-2$$a|b|c}``, ``{-2$$...}``, ``{2-$$...}``, with a joiner
  ``{2$$ and $$a|b|c}`` (default ``", "``); options nest (``{a|{b|c}}``);
- wildcards ``__colours__``, ``__clothes/tops__``, ``__colours*__`` (resolved by
  :mod:`batchgen.manifest.wildcards`);
- variables ``${season=winter}`` (each use chosen anew, like a macro),
  ``${season=!{summer|winter}}`` (chosen once for the whole prompt), ``${season?=...}``
  (keep a value set outside), ``${season}`` and ``${season:default}``.

How braces are read, so that fields and variants never collide: ``{name}`` and
``{name:05d}`` are always fields; braces holding a ``|`` or starting with a count
``N$$`` are a variant; anything else in braces is an error. Outside variants ``{{`` and
``}}`` are literal braces, as in every batchgen template; inside a variant braces are
structure (start a variant whose first option is a variant with a space: ``{ {a|b}|c}``).
``${name}`` with no variable of that name set is what it always was: a ``$`` then the
field ``{name}``.

Where this differs from the ``dynamicprompts`` library, on purpose: ``#`` is text (it
starts a comment there, so ``issue #1`` lost the rest of the prompt); spaces around an
option are layout (``{red | green}`` is ``red`` or ``green``); the joiner defaults to
``", "`` (as its documentation shows); sampler prefixes (``{~...}``, ``{@...}``,
``__~x__``), parameterised wildcards (``__x(a=b)__``) and the wrap command (``%{...$$...}``)
are refused with a message rather than read differently.

Every node keeps its offset in the text, so an error is located to the character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from batchgen.errors import TemplateError
from batchgen.manifest.template import FIELD, Field, parse_field

__all__ = [
    "DEFAULT_JOINER",
    "Node",
    "Option",
    "Prompt",
    "Seq",
    "VarSet",
    "VarUse",
    "Variant",
    "Wildcard",
    "parse_prompt",
]

DEFAULT_JOINER = ", "
_MAX_NESTING = 32  # variants and variables inside each other: far beyond use, far below the stack

_VAR_NAME = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*")
# A variant's count: N, N-M, -M or N-, then $$.
_COUNT = re.compile(r"\s*(?:(\d{1,6})|(\d{0,6})\s*-\s*(\d{0,6}))\s*\$\$")
_WEIGHT = re.compile(r"(\d{1,9}(?:\.\d*)?|\.\d+)::")
# A wildcard's name: path segments of letters, digits and . - * ? [ ] and single underscores.
_WILDCARD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*?[]/_")


@dataclass(frozen=True, slots=True)
class Option:
    """One option of a variant: its weight (random sampling only) and its text."""

    weight: float
    seq: Seq


@dataclass(frozen=True, slots=True)
class Variant:
    """``{a|b|c}``: pick from ``low`` to ``high`` distinct options (``high`` None: all), joined."""

    options: tuple[Option, ...]
    low: int
    high: int | None
    joiner: str
    offset: int


@dataclass(frozen=True, slots=True)
class Wildcard:
    """``__pattern__``: one value of the wildcard collections the pattern names."""

    pattern: str
    offset: int


@dataclass(frozen=True, slots=True)
class VarSet:
    """``${name=value}``: ``immediate`` (``=!``) chooses once per prompt; ``keep`` (``?=``)
    leaves a value set outside alone."""

    name: str
    value: Seq
    immediate: bool
    keep: bool
    offset: int


@dataclass(frozen=True, slots=True)
class VarUse:
    """``${name}`` or ``${name:default}``."""

    name: str
    default: Seq | None
    offset: int


Node = str | Field | Variant | Wildcard | VarSet | VarUse


@dataclass(frozen=True, slots=True)
class Seq:
    """Parts in order: literal text, fields, variants, wildcards, variables."""

    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Prompt:
    """A parsed prompt: its text and tree; ``dynamic`` if anything in it is chosen."""

    text: str
    seq: Seq
    dynamic: bool


def parse_prompt(text: str) -> Prompt:
    """Parse a prompt (or a wildcard value), raising :class:`TemplateError` with the offset."""
    parser = _Parser(text)
    seq = parser.seq(top=True)
    return Prompt(text, seq, parser.dynamic)


class _Parser:
    """A recursive-descent reader of one prompt's text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.dynamic = False
        self.depth = 0

    def fail(self, message: str, offset: int | None = None) -> TemplateError:
        return TemplateError(message, offset=self.i if offset is None else offset)

    def seq(self, *, top: bool = False, stops: str = "", in_variable: bool = False) -> Seq:
        """Parts up to the end or to one of ``stops`` (not consumed)."""
        text = self.text
        parts: list[Node] = []
        literal: list[str] = []

        def flush() -> None:
            if literal:
                parts.append("".join(literal))
                literal.clear()

        while self.i < len(text):
            ch = text[self.i]
            if ch in stops:
                break
            if ch == "{":
                if top and text.startswith("{{", self.i):
                    literal.append("{")
                    self.i += 2
                    continue
                flush()
                parts.append(self.braces())
                continue
            if ch == "}":
                if top and text.startswith("}}", self.i):
                    literal.append("}")
                    self.i += 2
                    continue
                hint = " (write '}}' for a literal brace)" if top else ""
                if top and "{{" in text[: self.i]:
                    hint = " ('{{' is a literal brace: write a variant that starts with one as { {a|b}|c})"
                raise self.fail(f"unmatched '}}' at character {self.i + 1}{hint}")
            if ch == "|" and in_variable:
                raise self.fail("a variable holds one text: write its options as a variant, ${name={a|b}}")
            if ch == "$" and text.startswith("${", self.i):
                flush()
                parts.append(self.variable(top=top))
                continue
            if ch == "_" and text.startswith("__", self.i):
                wildcard = self.wildcard()
                if wildcard is not None:
                    flush()
                    parts.append(wildcard)
                    continue
            literal.append(ch)
            self.i += 1
        flush()
        return Seq(tuple(parts))

    def braces(self) -> Field | Variant:
        """A field ``{name}`` or a variant ``{...|...}`` at ``self.i``."""
        start = self.i
        field = FIELD.match(self.text, start)
        if field is not None:
            self.i = field.end()
            return parse_field(field.group(1), field.group(2), offset=start)
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise self.fail(f"variants and variables nested more than {_MAX_NESTING} deep", start)
        try:
            return self.variant(start)
        finally:
            self.depth -= 1

    def variant(self, start: int) -> Variant:
        text = self.text
        self.i = start + 1
        if text[self.i : self.i + 1] in ("~", "@", "!") and self.i < len(text):
            raise self.fail(
                f"the sampler prefix {text[self.i]!r} is not supported: batchgen samples a whole job"
                " one way (every combination, or `sample:` random draws)"
            )
        low, counted = 1, False
        high: int | None = 1
        joiner = DEFAULT_JOINER
        count = _COUNT.match(text, self.i)
        if count is not None:
            counted = True
            exact, lower, upper = count.groups()
            if exact is not None:
                low = high = int(exact)
            else:
                low = int(lower) if lower else 1
                high = int(upper) if upper else None
                if high is not None and high < low:
                    raise self.fail(f"the count {lower}-{upper} goes down; write it low-high", start)
            self.i = count.end()
            # An optional joiner: text up to the next $$, before any brace or the end.
            end = text.find("$$", self.i)
            brace = min((p for p in (text.find("{", self.i), text.find("}", self.i)) if p >= 0), default=-1)
            if end >= 0 and (brace < 0 or end < brace):
                joiner = text[self.i : end]
                self.i = end + 2
        options: list[Option] = []
        while True:
            while self.i < len(text) and text[self.i].isspace():
                self.i += 1
            weight = 1.0
            found = _WEIGHT.match(text, self.i)
            if found is not None:
                weight = float(found.group(1))
                self.i = found.end()
            seq = _strip(self.seq(stops="|}"))
            options.append(Option(weight, seq))
            if self.i >= len(text):
                raise self.fail("a '{' that is never closed", start)
            if text[self.i] == "}":
                self.i += 1
                break
            self.i += 1  # the |
        if len(options) == 1 and not counted:
            body = text[start + 1 : self.i - 1]
            if not body.strip():
                raise self.fail("{} is an empty variant", start)
            raise self.fail(
                f"{{{body}}} is neither a field ({{name}}) nor a variant ({{a|b}});"
                " write {{ and }} for literal braces",
                start,
            )
        if all(o.weight == 0 for o in options):
            raise self.fail("every option of this variant has weight 0", start)
        self.dynamic = True
        return Variant(tuple(options), low, high, joiner, start)

    def variable(self, *, top: bool) -> VarSet | VarUse:
        self.depth += 1
        try:
            if self.depth > _MAX_NESTING:
                raise self.fail(f"variants and variables nested more than {_MAX_NESTING} deep")
            return self._variable(top=top)
        finally:
            self.depth -= 1

    def _variable(self, *, top: bool) -> VarSet | VarUse:
        text = self.text
        start = self.i
        self.i += 2
        while self.i < len(text) and text[self.i].isspace():
            self.i += 1
        name = _VAR_NAME.match(text, self.i)
        if name is None:
            raise self.fail("${ must be followed by a variable name (letters, digits, _ or -)", start)
        self.i = name.end()
        while self.i < len(text) and text[self.i].isspace():
            self.i += 1
        keep = text.startswith("?=", self.i)
        if keep or text.startswith("=", self.i):
            if not top:
                raise self.fail(
                    f"${{{name.group()}=...}} sets a variable inside a variant or a variable;"
                    " set it at the top of the prompt",
                    start,
                )
            self.i += 2 if keep else 1
            immediate = text.startswith("!", self.i)
            if immediate:
                self.i += 1
            value = _strip(self.seq(stops="}", in_variable=True))
            self._close(start)
            self.dynamic = True
            return VarSet(name.group(), value, immediate, keep, start)
        default: Seq | None = None
        if text.startswith(":", self.i):
            self.i += 1
            default = _strip(self.seq(stops="}", in_variable=True))
            self.dynamic = True  # without one, ${name} may be the field {name} after a $
        elif not text.startswith("}", self.i):
            raise self.fail(
                f"${{{name.group()} is not closed: write ${{{name.group()}}}, ${{{name.group()}:default}}"
                f" or ${{{name.group()}=value}}",
                start,
            )
        self._close(start)
        return VarUse(name.group(), default, start)

    def _close(self, start: int) -> None:
        if self.i >= len(self.text) or self.text[self.i] != "}":
            raise self.fail("a '${' that is never closed", start)
        self.i += 1

    def wildcard(self) -> Wildcard | None:
        """``__name__`` at ``self.i``, or None (the underscores are text)."""
        text = self.text
        start = self.i
        j = start + 2
        if j < len(text) and text[j] in "~@":
            raise self.fail(
                f"the sampler prefix {text[j]!r} is not supported in a wildcard: batchgen samples a whole"
                " job one way (every combination, or `sample:` random draws)"
            )
        if j >= len(text) or text[j] == "_" or not _wildcard_char(text[j]):
            return None
        while j < len(text) and not text.startswith("__", j):
            if text[j] == "(":
                raise self.fail("parameterised wildcards (__name(var=value)__) are not supported", start)
            if not _wildcard_char(text[j]):
                return None
            j += 1
        if j >= len(text):
            return None
        self.i = j + 2
        self.dynamic = True
        return Wildcard(text[start + 2 : j], start)


def _wildcard_char(ch: str) -> bool:
    return ch in _WILDCARD_CHARS or (ord(ch) > 127 and ch.isalnum())


def _strip(seq: Seq) -> Seq:
    """``seq`` without the whitespace at its two ends: spaces around ``|`` are layout."""
    parts = list(seq.parts)
    if parts and isinstance(parts[0], str):
        parts[0] = parts[0].lstrip()
    if parts and isinstance(parts[-1], str):
        parts[-1] = parts[-1].rstrip()
    return Seq(tuple(p for p in parts if p != ""))
