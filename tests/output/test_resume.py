"""The resume rule's reasons and the one table from reason to the verb a rerun is reported under."""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin, get_type_hints

from batchgen.output.resume import (
    RERUN_VERBS,
    Poll,
    Reconcile,
    RerunVerb,
    ResumeDecision,
    ResumeReason,
    Skip,
    Submit,
    rerun_verb,
)


def literal_values(hint: Any) -> set[str]:
    """Every string a Literal type (or a union of them) allows."""
    if get_origin(hint) is Literal:
        return set(get_args(hint))
    return set().union(*(literal_values(arg) for arg in get_args(hint)))


def reasons_of(decision: type) -> set[str]:
    """The reasons a decision class can give: its ``reason`` field's type, or its property's."""
    hints = get_type_hints(decision)
    if "reason" in hints:
        return literal_values(hints["reason"])
    return literal_values(get_type_hints(decision.reason.fget)["return"])


def test_every_reason_of_every_decision_has_a_verb() -> None:
    """A reason added to any decision's Literal type without a row in RERUN_VERBS fails here."""
    from_decisions = set().union(*(reasons_of(d) for d in get_args(ResumeDecision)))
    assert from_decisions == literal_values(ResumeReason)
    assert set(RERUN_VERBS) == from_decisions
    assert set(RERUN_VERBS.values()) == literal_values(RerunVerb)


def test_rerun_verb_reads_the_table() -> None:
    """Each kind of decision is reported under its verb, file-outside (the old KeyError) included."""
    assert rerun_verb(Skip("completed")) == "skip"
    assert rerun_verb(Skip("failed")) == "skip failed"
    assert rerun_verb(Poll("r", 1.0)) == "repoll"
    assert rerun_verb(Poll("r", 1.0, recover=True)) == "recover"
    assert rerun_verb(Reconcile({}, 1.0)) == "reconcile"
    assert rerun_verb(Submit("new")) == "submit"
    assert rerun_verb(Submit("file-outside", "r")) == "resubmit"
