"""Both stores against the pure lifecycle table (bridge/delivery.py): for every
transition a store runs by id, from every state a row can be in, the store
changes the row exactly when the table says it may, and to the state it says.
PostgreSQL's hand-tuned one-round-trip statements are held to the same table."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
import pytest_asyncio

from bridge.delivery import (
    WAITING,
    Delivery,
    DeliveryState,
    Guard,
    Reason,
    T,
    ThreadChange,
    Transition,
)
from bridge.store import Store
from tests.contract.test_store import LEASE, accept, open_store, to

S = DeliveryState
# Each row is its own case (a fresh key and group): one store per module is enough.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["postgres", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Store]:
    async with open_store(request.param, tmp_path_factory.mktemp("lifecycle")) as opened:
        yield opened


WHY = {"reason": Reason.SERVER_ERROR, "error": "detail"}

# How a row reaches each state it can be in, through the lifecycle itself:
# (the state, whether a request was written under the current claim, the steps).
Step = Callable[[Store, int], Awaitable[object]]


async def claim(store: Store, d: int) -> object:
    return await store.claim(d, lease=LEASE)


def run(transition: Transition, **params: object) -> Step:
    async def step(store: Store, d: int) -> object:
        assert await store.apply(transition, d, **params), transition.name
        return None

    return step


async def delivered(store: Store, d: int) -> object:
    return await store.mark_delivered(
        d, 1, plain_text=False, reply_to=None, thread=ThreadChange.NONE
    )


BEGIN = run(T.begin_send)
PATHS: dict[str, tuple[DeliveryState, bool, list[Step]]] = {
    "queued": (S.QUEUED, False, []),
    "claimed": (S.SENDING, False, [claim]),
    "written": (S.SENDING, True, [claim, BEGIN]),
    "retry": (S.RETRY, False, [claim, BEGIN, run(T.retry, delay=timedelta(0), **WHY)]),
    "delivered": (S.DELIVERED, True, [claim, BEGIN, delivered]),
    "failed": (S.FAILED, True, [claim, BEGIN, run(T.failed, **WHY)]),
    "ambiguous": (S.AMBIGUOUS, True, [claim, BEGIN, run(T.ambiguous_assume_sent, **WHY)]),
    "suppressed": (S.SUPPRESSED, False, [run(T.digested, digest_id=None, error="folded")]),
}

# Every transition a store runs on one row by id, with its parameters.
BY_ID: dict[str, tuple[Transition, dict[str, object]]] = {
    "begin_send": (T.begin_send, {}),
    "unbegin": (T.unbegin, {}),
    "give_back": (T.give_back, {"delay": timedelta(0)}),
    "retry": (T.retry, {"delay": timedelta(0), **WHY}),
    "failed": (T.failed, WHY),
    "ambiguous_assume_sent": (T.ambiguous_assume_sent, WHY),
    "ambiguous_resend": (T.ambiguous_resend, WHY),
    "postpone": (T.postpone, {"delay": timedelta(0)}),
    "defer": (T.defer, {"republish_after": timedelta(0)}),
    "digested": (T.digested, {"digest_id": None, "error": "folded"}),
    "operator_resend": (T.operator_resend, {"note": "resent by ops at 2026-12-01 16:00"}),
}


def facts(written: bool) -> dict[Guard, bool]:
    """What holds of a lone row reached by PATHS, with a long lease and nothing delayed."""
    return {
        Guard.DUE: True,
        Guard.FIRST_IN_GROUP: True,
        Guard.LEASE_HELD: True,
        Guard.LEASE_EXPIRED: False,
        Guard.NOT_WRITTEN: not written,
        Guard.WRITTEN: written,
        Guard.FOLDABLE: True,
    }


async def row_in(store: Store, path: str) -> int:
    (d,) = await accept(store, to(42))
    for step in PATHS[path][2]:
        await step(store, d)
    return d


def expected_state(transition: Transition, before: DeliveryState, attempts: int) -> S:
    if "state" in transition.writes:  # WaitingAgain: queued unless attempted before
        return S.QUEUED if attempts == 0 else S.RETRY
    return transition.to or before


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", BY_ID)
async def test_a_transition_by_id_changes_a_row_exactly_when_the_table_allows(
    store: Store, name: str, path: str
) -> None:
    transition, params = BY_ID[name]
    state, written, steps = PATHS[path]
    d = await row_in(store, path)
    assert await store.state_of(d) is state
    allowed = transition.allows(state, facts(written))
    assert await store.apply(transition, d, **params) == allowed
    attempts = sum(step is BEGIN for step in steps)
    after = expected_state(transition, state, attempts) if allowed else state
    assert await store.state_of(d) is after


@pytest.mark.parametrize("path", PATHS)
async def test_claim_follows_the_table(store: Store, path: str) -> None:
    state, written, _ = PATHS[path]
    d = await row_in(store, path)
    claimed: Delivery | None = await store.claim(d, lease=LEASE)
    assert (claimed is not None) == T.claim.allows(state, facts(written))


@pytest.mark.parametrize("path", PATHS)
async def test_claim_and_begin_follows_the_table(store: Store, path: str) -> None:
    state, written, steps = PATHS[path]
    d = await row_in(store, path)
    claimed = await store.claim(d, lease=LEASE, begin=True)
    assert (claimed is not None) == T.claim_and_begin.allows(state, facts(written))
    if claimed is not None:  # begun: a second begin finds it written, and it counts
        assert claimed.written and claimed.attempts == sum(s is BEGIN for s in steps) + 1
        assert not await store.apply(T.begin_send, d)


@pytest.mark.parametrize("path", PATHS)
async def test_delivered_follows_the_table(store: Store, path: str) -> None:
    state, written, _ = PATHS[path]
    d = await row_in(store, path)
    done = await store.mark_delivered(
        d, 9, plain_text=False, reply_to=None, thread=ThreadChange.NONE
    )
    assert done == T.delivered.allows(state, facts(written))


async def test_a_claim_waits_behind_an_unfinished_row_of_its_group(store: Store) -> None:
    group = uuid.uuid4()
    (first,) = await accept(store, to(42), group=group)
    (second,) = await accept(store, to(42), group=group)
    assert await store.claim(second, lease=LEASE) is None
    assert T.claim.allows(S.QUEUED, {**facts(False), Guard.FIRST_IN_GROUP: False}) is False
    assert await store.claim(first, lease=LEASE) is not None


async def test_every_state_is_reachable_in_the_matrix() -> None:
    assert {state for state, _, _ in PATHS.values()} == set(S)
    assert {state for state, _, _ in PATHS.values()} >= WAITING
