"""The lifecycle's rules, pure: the table every store is held to."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from bridge.delivery import (
    TERMINAL,
    UNFINISHED,
    WAITING,
    AmbiguityPolicy,
    Const,
    DeliveryState,
    FoldedRow,
    Guard,
    Increment,
    Now,
    Reason,
    T,
    ThreadChange,
    ambiguous,
    initial,
    lease_expired,
    next_occurrence,
    thread_change,
    threads_closed_by_digest,
)

S = DeliveryState
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (None, 1),  # first sight
        ((1, NOW - timedelta(minutes=1)), None),  # a copy inside the window: dropped
        ((1, NOW - WINDOW), 2),  # the window is over: a reminder, delivered again
        ((7, NOW - timedelta(hours=4)), 8),
    ],
)
def test_occurrence_rule(seen: tuple[int, datetime] | None, expected: int | None) -> None:
    assert next_occurrence(seen, NOW, WINDOW) == expected


def test_an_acked_reminder_starts_suppressed_with_its_reason() -> None:
    assert initial(None).state is S.QUEUED and not initial(None).finished
    acked = initial("oncall")
    assert (acked.state, acked.reason, acked.error) == (
        S.SUPPRESSED,
        Reason.ACKED,
        "acked by oncall",
    )
    assert acked.finished


GROUP = uuid.uuid4()


@pytest.mark.parametrize(
    ("group", "reply_to", "resolves", "change"),
    [
        (GROUP, None, False, ThreadChange.OPEN),  # a stand-alone message opens the thread
        (GROUP, None, True, ThreadChange.OPEN_CLOSED),
        (GROUP, 100, False, ThreadChange.NONE),  # a reply in an open thread
        (GROUP, 100, True, ThreadChange.CLOSE),  # a resolving reply closes it
        (None, None, False, ThreadChange.NONE),  # a digest is nobody's thread
    ],
)
def test_thread_rule(
    group: uuid.UUID | None, reply_to: int | None, resolves: bool, change: ThreadChange
) -> None:
    assert thread_change(group, reply_to, resolves) is change


def test_a_digest_that_folds_a_resolution_closes_that_group_s_thread() -> None:
    other = uuid.uuid4()
    folded = [FoldedRow(1, GROUP, True), FoldedRow(2, other, False), FoldedRow(3, None, True)]
    assert threads_closed_by_digest(folded) == {GROUP}


def test_terminal_transitions_and_only_they_release_the_group() -> None:
    for transition in T.all():
        finishes = transition.to in TERMINAL
        assert transition.releases_group == finishes, transition.name


def test_a_finished_row_is_never_changed_except_by_a_late_answer_or_a_person() -> None:
    # A person who checked the chat may resend an ambiguous or failed row; nothing
    # else reopens one, and nothing at all touches a delivered or suppressed row.
    expected = {T.delivered: {S.AMBIGUOUS}, T.operator_resend: {S.AMBIGUOUS, S.FAILED}}
    for transition in T.all():
        from_terminal = transition.start & TERMINAL
        assert from_terminal == expected.get(transition, set()), transition.name


def test_every_way_back_to_waiting_drops_the_lease_and_the_written_mark() -> None:
    for transition in T.all():
        writes = transition.assignments()
        back = transition.to in WAITING or ("state" in writes and transition.to is None)
        if back and transition.start == {S.SENDING}:
            assert writes.get("lease_until") == Const(None), transition.name
            assert writes.get("send_started_at") == Const(None), transition.name


def test_an_attempt_is_counted_exactly_where_a_request_is_begun() -> None:
    counting = {t.name for t in T.all() if t.writes.get("attempts") == Increment("attempts")}
    stamping = {t.name for t in T.all() if t.writes.get("send_started_at") == Now()}
    assert counting == stamping == {"begin_send", "claim_and_begin"}
    # Only a begun request nobody wrote yet is taken back, with its count.
    assert T.unbegin.writes["attempts"] == Increment("attempts", by=-1)
    assert Guard.WRITTEN in T.unbegin.guards and Guard.LEASE_HELD in T.unbegin.guards


def test_a_lease_expiry_is_ambiguous_only_once_the_request_was_written() -> None:
    for policy in AmbiguityPolicy:
        assert Guard.WRITTEN in lease_expired(policy).guards
    assert Guard.NOT_WRITTEN in T.lease_expired_unwritten.guards
    assert T.lease_expired_unwritten.to is None  # waiting again, as queued or retry
    assert lease_expired(AmbiguityPolicy.ASSUME_SENT).to is S.AMBIGUOUS
    assert lease_expired(AmbiguityPolicy.RESEND).to is S.RETRY


def test_each_ambiguity_policy_keeps_the_mark() -> None:
    assert ambiguous(AmbiguityPolicy.ASSUME_SENT).to is S.AMBIGUOUS
    assert ambiguous(AmbiguityPolicy.RESEND).to is S.RETRY
    for policy in AmbiguityPolicy:
        for transition in (ambiguous(policy), lease_expired(policy)):
            assert transition.writes["was_ambiguous"] == Const(True)


def test_a_claim_needs_a_due_row_first_in_its_group() -> None:
    facts = {g: True for g in Guard}
    for state in S:
        assert T.claim.allows(state, facts) == (state in WAITING)
    assert not T.claim.allows(S.QUEUED, {**facts, Guard.FIRST_IN_GROUP: False})
    assert not T.claim.allows(S.RETRY, {**facts, Guard.DUE: False})


def test_a_request_is_begun_once_and_only_under_a_live_lease() -> None:
    facts = {g: True for g in Guard}
    assert T.begin_send.allows(S.SENDING, {**facts, Guard.NOT_WRITTEN: True})
    assert not T.begin_send.allows(S.SENDING, {**facts, Guard.NOT_WRITTEN: False})
    assert not T.begin_send.allows(S.SENDING, {**facts, Guard.LEASE_HELD: False})


def test_unfinished_is_waiting_and_sending() -> None:
    assert {S.QUEUED, S.RETRY, S.SENDING} == UNFINISHED
    assert not UNFINISHED & TERMINAL and set(S) == UNFINISHED | TERMINAL
