"""The prompts a dynamic template stands for: counted by arithmetic, listed in order, or drawn.

**Every combination** (the default): a variant gives each option in written order
(``{2$$a|b|c}``: each pair once, in written order: ``a, b``, ``a, c``, ``b, c``; a count
range from its low end up); a wildcard each value of its collections; a prompt's parts
combine as a grid does, the last varying fastest, after its ``${name=!...}`` variables
(chosen once for the prompt, outermost first). ``${name=...}`` without ``!`` is a macro:
each use is chosen on its own. Weights do not matter here.

**Random** (``sample: N``): N distinct prompts, each choice drawn by its weight (a count
range uniformly, then that many distinct options, kept in written order), so random
draws are always among the combinations listed above. The draws are a pure function
of the template, the sample's seed and a salt (the job's labels): the same manifest gives
the same prompts on every machine and every rerun. A template with at most N
combinations gives all of them.

Counting never enumerates: a sequence multiplies, a variant sums over how many it picks
the elementary symmetric sums of its options' counts, a wildcard adds its values'
counts; so a 10**12-combination prompt is refused by the job cap at once.

A prompt's text after its choices is a field template (:class:`~batchgen.manifest.template.Template`),
written back as text: ``{sku}`` fields are filled from the job's labels afterwards, and a
choice never reads as syntax again.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from batchgen.errors import Problem, TemplateError
from batchgen.manifest.dynamic import Node, Prompt, Seq, Variant, VarSet, VarUse, Wildcard, parse_prompt
from batchgen.manifest.params import prompt_warnings
from batchgen.manifest.template import Field, Template, parse_template
from batchgen.manifest.wildcards import Missing, Wildcards, WildValue

__all__ = ["MAX_WILDCARD_DEPTH", "Analysis", "Issue", "Prompts", "literal_text"]

MAX_WILDCARD_DEPTH = 32  # wildcards inside wildcards, a bound on runaway (or circular) nesting
_SPACES = re.compile(r" {2,}")
_CACHED_LIST = 10_000  # a template's prompts kept in memory up to this many
# Work allowed to count one multi-pick variant (options x picks); beyond it the count is refused.
_MAX_PICK_WORK = 2_000_000

Part = str | Field


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem of a template: at ``offset`` of its own text, or ``problem`` in a wildcard file."""

    message: str
    offset: int | None = None
    problem: Problem | None = None


@dataclass
class Analysis:
    """What a checked template holds: ``count`` prompts (None if it has issues), the field
    names it uses, its issues, and warnings about wildcard values it may use."""

    count: int | None
    names: list[str] = field(default_factory=list)  # in order of first use
    issues: list[Issue] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    literal: str = ""  # its own literal text, for the prompt warnings


@dataclass(frozen=True, slots=True)
class _Fixed:
    """A variable chosen once for the prompt (``=!``): the parts it holds (None while counting)."""

    parts: tuple[Part, ...] | None


@dataclass(frozen=True, slots=True)
class _Macro:
    """A variable chosen at each use (``=`` without ``!``)."""

    value: Seq


_Binding = _Fixed | _Macro
_Env = tuple[tuple[str, _Binding], ...]


def _lookup(env: _Env, name: str) -> _Binding | None:
    for key, binding in reversed(env):
        if key == name:
            return binding
    return None


def _without(env: _Env, name: str) -> _Env:
    return tuple((k, b) for k, b in env if k != name)


def literal_text(seq: Seq) -> str:
    """Every literal character a template may send (options, joiners, defaults), for warnings."""
    out: list[str] = []
    for part in seq.parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, Variant):
            out.append(" ".join(literal_text(o.seq) for o in part.options))
            out.append(part.joiner)
        elif isinstance(part, VarSet):
            out.append(literal_text(part.value))
        elif isinstance(part, VarUse) and part.default is not None:
            out.append(literal_text(part.default))
    return " ".join(out)


class _Draws:
    """A deterministic stream of random numbers from a text seed (blake2b in counter mode):
    the same on every machine and Python version, unlike :mod:`random`'s algorithms."""

    def __init__(self, seed: str) -> None:
        self._key = hashlib.blake2b(seed.encode("utf-8"), digest_size=32).digest()
        self._counter = 0

    def _next(self) -> int:
        self._counter += 1
        digest = hashlib.blake2b(self._counter.to_bytes(8, "big"), key=self._key, digest_size=16).digest()
        return int.from_bytes(digest, "big")

    def below(self, n: int) -> int:
        """An integer in ``[0, n)`` (bias below n / 2**128)."""
        return self._next() % n

    def pick(self, weights: Sequence[float]) -> int:
        """An index, drawn by weight (uniformly when every weight is 0)."""
        total = math.fsum(weights)
        if total <= 0:
            return self.below(len(weights))
        point = (self._next() >> 75) / (1 << 53) * total  # 53 random bits in [0, 1)
        running = 0.0
        for i, weight in enumerate(weights):
            running += weight
            if point < running:
                return i
        return max(i for i, w in enumerate(weights) if w > 0)


def _choose(n: int, k: int, weights: Sequence[float], draws: _Draws) -> list[int]:
    """``k`` distinct indexes of ``n``, each drawn by weight among those left, in written order."""
    left = list(range(n))
    chosen: list[int] = []
    for _ in range(k):
        i = draws.pick([weights[j] for j in left])
        chosen.append(left.pop(i))
    return sorted(chosen)


def _picks(variant_low: int, variant_high: int | None, n: int) -> range:
    """How many options a variant of ``n`` options picks: its count range, clamped to ``n``."""
    high = n if variant_high is None else min(variant_high, n)
    return range(min(variant_low, n), high + 1)


def _elementary_sums(counts: Sequence[int], top: int) -> list[int]:
    """e_0..e_top of ``counts``: e_k sums, over every k options, the product of their counts."""
    sums = [1] + [0] * top
    for c in counts:
        for k in range(top, 0, -1):
            sums[k] += sums[k - 1] * c
    return sums


class Prompts:
    """The prompt templates of one manifest: parsed once per text, analysed, counted, listed, drawn.

    ``wildcards`` are the manifest's wildcard folders (None: there are none, and any
    ``__name__`` is an error).
    """

    def __init__(self, wildcards: Wildcards | None) -> None:
        self.wildcards = wildcards
        self._parsed: dict[str, Prompt | TemplateError] = {}
        self._analysed: dict[str, Analysis] = {}
        self._values: dict[str, tuple[WildValue, ...] | Missing] = {}
        self._value_problems: dict[str, list[Problem]] = {}
        self._walked: dict[tuple[str, tuple[tuple[str, int], ...]], _Walked] = {}
        self._lists: dict[str, list[str]] = {}

    # --- parsing and checking ------------------------------------------------------

    def parse(self, text: str) -> Prompt:
        """The parsed template (cached), or :class:`TemplateError`."""
        found = self._parsed.get(text)
        if found is None:
            try:
                found = parse_prompt(text)
            except TemplateError as exc:
                found = exc
            self._parsed[text] = found
        if isinstance(found, TemplateError):
            raise found
        return found

    def analyse(self, text: str) -> Analysis:
        """Parse and walk a template once: its count, field names, issues and warnings (cached;
        a plain field template, the common CSV cell, is read as one and not kept)."""
        if _plain(text):
            try:
                template = parse_template(text)
            except TemplateError as exc:
                return Analysis(None, issues=[Issue(f"invalid template: {exc}", exc.offset)])
            return Analysis(1, list(template.names), literal=template.render({}, missing=""))
        cached = self._analysed.get(text)
        if cached is not None:
            return cached
        try:
            prompt = self.parse(text)
        except TemplateError as exc:
            analysis = Analysis(None, issues=[Issue(f"invalid template: {exc}", exc.offset)])
        else:
            walk = _Walk(self)
            count = walk.seq(prompt.seq, (), None)
            analysis = Analysis(
                None if walk.issues else count,
                list(walk.names),
                walk.issues,
                walk.warnings,
                literal_text(prompt.seq),
            )
        self._analysed[text] = analysis
        return analysis

    def values(self, pattern: str) -> tuple[WildValue, ...]:
        """The values of every collection ``pattern`` names, each text once; :class:`Missing`."""
        found = self._values.get(pattern)
        if found is None:
            try:
                if self.wildcards is None:
                    # A loaded manifest always has its Wildcards, which say where they were looked for.
                    raise Missing(f"no wildcard __{pattern}__: no wildcard folder is in use", [])
                merged: dict[str, WildValue] = {}
                collections = self.wildcards.find(pattern)
                for collection in collections:
                    for value in collection.values:
                        merged.setdefault(value.text, value)
                found = tuple(merged.values())
                self._value_problems[pattern] = self.wildcards.problems(collections)
            except Missing as exc:
                found = exc
            self._values[pattern] = found
        if isinstance(found, Missing):
            raise found
        return found

    # --- counting, listing, drawing ---------------------------------------------------

    def count(self, text: str) -> int:
        """How many prompts the template gives (1 for a plain one); the template must be valid."""
        if _plain(text):
            return 1
        analysis = self.analyse(text)
        if analysis.count is None:
            raise ValueError(f"the template {text!r} is not valid")
        return analysis.count

    def each(self, text: str) -> Iterator[str]:
        """Every prompt of the template in order, as field-template text (the text itself if plain)."""
        if _plain(text):
            yield text
            return
        prompt = self.parse(text)
        if not prompt.dynamic:
            yield text
            return
        cached = self._lists.get(text)
        if cached is not None:
            yield from cached
            return
        keep = self.count(text) <= _CACHED_LIST
        listed: list[str] = []
        for parts in self._each_seq(prompt.seq, ()):
            one = _text(parts)
            if keep:
                listed.append(one)
            yield one
        if keep:
            self._lists[text] = listed

    def sample(self, text: str, count: int, *, seed: int, salt: str) -> list[str]:
        """``count`` distinct prompts drawn from the template (all of them if it has no more)."""
        total = self.count(text)
        if total <= count:
            return list(self.each(text))
        prompt = self.parse(text)
        draws = _Draws(f"{seed}\x00{text}\x00{salt}")
        found: dict[str, None] = {}
        # Distinct draws: a repeat is drawn again. With total > count this ends quickly
        # unless weights make most combinations rare; the bound keeps it finite.
        for _ in range(20 * count + 100):
            found.setdefault(_text(self._draw_seq(prompt.seq, (), draws)), None)
            if len(found) == count:
                break
        return list(found)

    def sampled_count(self, text: str, count: int | None) -> int:
        """How many prompts a job gets from the template: all, or ``count`` drawn (at most all)."""
        total = self.count(text)
        return total if count is None else min(total, count)

    # --- every combination -----------------------------------------------------------

    def _assign(self, seq: Seq, env: _Env) -> tuple[list[VarSet], list[Node], _Env]:
        """A sequence's immediate variables (to choose), its other parts, and the env of macros."""
        chosen: list[VarSet] = []
        rest: list[Node] = []
        inner = env
        for part in seq.parts:
            if isinstance(part, VarSet):
                if part.keep and _lookup(env, part.name) is not None:
                    continue
                if part.immediate:
                    chosen.append(part)
                else:
                    inner = (*inner, (part.name, _Macro(part.value)))
            else:
                rest.append(part)
        return chosen, rest, inner

    def _each_seq(self, seq: Seq, env: _Env) -> Iterator[tuple[Part, ...]]:
        chosen, rest, inner = self._assign(seq, env)
        if not chosen:
            yield from self._each_parts(rest, inner)
            return
        options = [list(self._each_seq(one.value, env)) for one in chosen]
        for values in itertools.product(*options):
            bound = (*inner, *((one.name, _Fixed(v)) for one, v in zip(chosen, values, strict=True)))
            yield from self._each_parts(rest, bound)

    def _each_parts(self, parts: Sequence[Node], env: _Env) -> Iterator[tuple[Part, ...]]:
        lists = [list(self._each_node(part, env)) for part in parts]
        for combo in itertools.product(*lists):
            yield tuple(p for one in combo for p in one)

    def _each_node(self, node: Node, env: _Env) -> Iterator[tuple[Part, ...]]:
        if isinstance(node, str | Field):
            yield (node,)
        elif isinstance(node, Variant):
            options = self._options(node, env)
            listed = [list(self._each_seq(seq, sub)) for seq, sub in options]
            for k in _picks(node.low, node.high, len(options)):
                for combo in itertools.combinations(listed, k):
                    for picked in itertools.product(*combo):
                        yield _joined(picked, node.joiner)
        elif isinstance(node, Wildcard):
            for value in self.values(node.pattern):
                yield from self._each_seq(self.parse(value.text).seq, env)
        elif isinstance(node, VarUse):
            binding = _lookup(env, node.name)
            if isinstance(binding, _Fixed):
                assert binding.parts is not None
                yield binding.parts
            elif isinstance(binding, _Macro):
                yield from self._each_seq(binding.value, _without(env, node.name))
            elif node.default is not None:
                yield from self._each_seq(node.default, env)
            else:
                yield ("$", Field(node.name))
        # a VarSet is handled by its sequence

    def _options(self, node: Variant, env: _Env) -> list[tuple[Seq, _Env]]:
        """A variant's options; ``{2$$__w__}`` (one option, a lone wildcard) picks among its values."""
        only = node.options[0].seq.parts if len(node.options) == 1 else ()
        if len(only) == 1 and isinstance(only[0], Wildcard):
            return [(self.parse(v.text).seq, env) for v in self.values(only[0].pattern)]
        return [(o.seq, env) for o in node.options]

    def _weights(self, node: Variant) -> list[float]:
        only = node.options[0].seq.parts if len(node.options) == 1 else ()
        if len(only) == 1 and isinstance(only[0], Wildcard):
            return [v.weight for v in self.values(only[0].pattern)]
        return [o.weight for o in node.options]

    # --- random draws -----------------------------------------------------------------

    def _draw_seq(self, seq: Seq, env: _Env, draws: _Draws) -> tuple[Part, ...]:
        chosen, rest, inner = self._assign(seq, env)
        bound = inner
        for one in chosen:
            bound = (*bound, (one.name, _Fixed(self._draw_seq(one.value, env, draws))))
        return tuple(p for part in rest for p in self._draw_node(part, bound, draws))

    def _draw_node(self, node: Node, env: _Env, draws: _Draws) -> tuple[Part, ...]:
        if isinstance(node, str | Field):
            return (node,)
        if isinstance(node, Variant):
            options = self._options(node, env)
            picks = _picks(node.low, node.high, len(options))
            k = picks.start + draws.below(len(picks))
            chosen = _choose(len(options), k, self._weights(node), draws)
            return _joined([self._draw_seq(*options[i], draws) for i in chosen], node.joiner)
        if isinstance(node, Wildcard):
            values = self.values(node.pattern)
            value = values[draws.pick([v.weight for v in values])]
            return self._draw_seq(self.parse(value.text).seq, env, draws)
        if isinstance(node, VarUse):
            binding = _lookup(env, node.name)
            if isinstance(binding, _Fixed):
                assert binding.parts is not None
                return binding.parts
            if isinstance(binding, _Macro):
                return self._draw_seq(binding.value, _without(env, node.name), draws)
            if node.default is not None:
                return self._draw_seq(node.default, env, draws)
            return ("$", Field(node.name))
        return ()


def _plain(text: str) -> bool:
    """Whether ``text`` can hold nothing dynamic: no variant (``|``, ``$$``), wildcard or variable."""
    return "|" not in text and "__" not in text and "${" not in text and "$$" not in text


def _text(parts: Sequence[Part]) -> str:
    """A chosen prompt as field-template text, without the spaces its choices leave: at its
    ends (``${x=...} a ${x}``), and doubled (``a {0-1$$big} dog`` without big)."""
    return _SPACES.sub(" ", Template.from_parts(parts).text.strip())


def _joined(picked: Sequence[tuple[Part, ...]], joiner: str) -> tuple[Part, ...]:
    out: list[Part] = []
    for i, one in enumerate(picked):
        if i:
            out.append(joiner)
        out.extend(one)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Walked:
    """What walking one wildcard's values found: each value's count, names, issues, warnings."""

    counts: tuple[int, ...]
    names: tuple[str, ...]
    issues: tuple[Issue, ...]
    warnings: tuple[Problem, ...]


class _Walk:
    """One check of one template: counts by arithmetic while noting field names, issues
    (located in the template, or in a wildcard file) and warnings about wildcard values.

    What a wildcard's values hold is walked once per manifest (for each set of macros in
    force), however many templates use it.
    """

    def __init__(self, prompts: Prompts, active: tuple[str, ...] = ()) -> None:
        self.prompts = prompts
        self.names: dict[str, None] = {}  # in order of first use
        self.issues: list[Issue] = []
        self.warnings: list[Problem] = []
        self.active = active  # the wildcards being walked, outermost first

    def issue(self, message: str, offset: int, inside: WildValue | None) -> None:
        """Note a problem at ``offset`` of the template, or of the wildcard value ``inside``."""
        if inside is None:
            self.issues.append(Issue(message, offset))
            return
        line, column = inside.origin.locate(inside.text, offset)
        problem = Problem(inside.origin.file or "", line, f"__{self.active[-1]}__", message, column)
        self.issues.append(Issue(message, None, problem))

    def seq(self, seq: Seq, env: _Env, inside: WildValue | None) -> int:
        chosen, rest, inner = self.prompts._assign(seq, env)
        total = 1
        for one in chosen:
            total *= self.seq(one.value, env, inside)
        bound = (*inner, *((one.name, _Fixed(None)) for one in chosen))
        for part in rest:
            total *= self.node(part, bound, inside)
        return total

    def node(self, node: Node, env: _Env, inside: WildValue | None) -> int:
        if isinstance(node, Field):
            self.names.setdefault(node.name, None)
        elif isinstance(node, Variant):
            return self.variant(node, env, inside)
        elif isinstance(node, Wildcard):
            return sum(self.values_counts(node, env, inside))
        elif isinstance(node, VarUse):
            binding = _lookup(env, node.name)
            if isinstance(binding, _Macro):
                # Evaluated without itself: ``${x=a ${x}}`` reads the outer x, never loops.
                return self.seq(binding.value, _without(env, node.name), inside)
            if binding is None and node.default is not None:
                return self.seq(node.default, env, inside)
            if binding is None:
                self.names.setdefault(node.name, None)  # ``${name}``: a $ then the field {name}
        return 1

    def variant(self, node: Variant, env: _Env, inside: WildValue | None) -> int:
        only = node.options[0].seq.parts if len(node.options) == 1 else ()
        if len(only) == 1 and isinstance(only[0], Wildcard):
            counts = self.values_counts(only[0], env, inside)
        else:
            counts = [self.seq(o.seq, env, inside) for o in node.options]
        picks = _picks(node.low, node.high, len(counts))
        if all(c == 1 for c in counts):
            return sum(math.comb(len(counts), k) for k in picks)
        if len(counts) * picks.stop > _MAX_PICK_WORK:
            self.issue(
                f"picks up to {picks.stop - 1:,} of {len(counts):,} options: too many to count; pick fewer",
                node.offset,
                inside,
            )
            return 1
        sums = _elementary_sums(counts, picks.stop - 1)
        return sum(sums[k] for k in picks)

    def values_counts(self, node: Wildcard, env: _Env, inside: WildValue | None) -> list[int]:
        """The count of each value of a wildcard, its values walked once per manifest and env."""
        prompts = self.prompts
        try:
            values = prompts.values(node.pattern)
        except Missing as exc:
            if exc.message is not None:
                self.issue(exc.message, node.offset, inside)
            self.issues.extend(Issue(p.what, None, p) for p in exc.problems)
            return [1]
        self.issues.extend(Issue(p.what, None, p) for p in prompts._value_problems.get(node.pattern, ()))
        if node.pattern in self.active:
            circle = (*self.active[self.active.index(node.pattern) :], node.pattern)
            self.issue(
                "wildcards use each other in a circle: " + " -> ".join(f"__{p}__" for p in circle),
                node.offset,
                inside,
            )
            return [1]
        if len(self.active) >= MAX_WILDCARD_DEPTH:
            self.issue(f"wildcards nested more than {MAX_WILDCARD_DEPTH} deep", node.offset, inside)
            return [1]
        key = (node.pattern, tuple((k, id(b.value) if isinstance(b, _Macro) else 0) for k, b in env))
        walked = prompts._walked.get(key)
        if walked is None:
            sub = _Walk(prompts, (*self.active, node.pattern))
            counts = tuple(sub.value(value, env) for value in values)
            walked = _Walked(counts, tuple(sub.names), tuple(sub.issues), tuple(sub.warnings))
            # A circle found below this wildcard depends on the chain above it: keep only
            # what holds wherever the wildcard is used.
            if not sub.issues:
                prompts._walked[key] = walked
        self.names.update(dict.fromkeys(walked.names))
        self.issues.extend(walked.issues)
        self.warnings.extend(walked.warnings)
        return list(walked.counts)

    def value(self, value: WildValue, env: _Env) -> int:
        """The count of one wildcard value; its problems and warnings noted (warnings about
        the text it may send, not about its syntax)."""
        try:
            prompt = self.prompts.parse(value.text)
        except TemplateError as exc:
            self.issue(f"invalid template: {exc}", exc.offset or 0, value)
            return 1
        origin = value.origin
        for message in prompt_warnings(literal_text(prompt.seq)):
            where = f"__{self.active[-1]}__"
            self.warnings.append(Problem(origin.file or "", origin.line, where, message, origin.column))
        return self.seq(prompt.seq, env, value)
