"""The operator's endpoints every process serves: /healthz, /readyz, /metrics.

A worker-only process serves these alone (on `listen`), so its probes work
and the metrics only workers produce (deliveries finished, retries, 429s,
Bot API latency, the backlog) are scraped.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.errors import StoreUnavailable
from bridge.metrics import Metrics
from bridge.store import Store


def ops_routes(
    store: Store,
    broker_connected: Callable[[], bool],
    metrics: Metrics,
    *,
    broker_required: bool,
) -> list[Route]:
    """``broker_required``: a worker without its broker does no work, so it is
    not ready; a receiver still stores webhooks (the scheduler publishes them
    later), so for it the broker is only reported."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems: list[str] = []
        try:
            pending = await store.pending_migrations()
            if pending:
                problems.append(f"migrations not applied: {', '.join(pending)}")
        except StoreUnavailable as exc:
            problems.append(str(exc))
        connected = broker_connected()
        if broker_required and not connected:
            problems.append("not connected to the broker")
        body = {
            "status": "not ready" if problems else "ready",
            "problems": problems,
            "broker_connected": connected,
        }
        return JSONResponse(body, status_code=503 if problems else 200)

    async def scrape(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
    ]


def create_ops_app(
    store: Store, broker_connected: Callable[[], bool], metrics: Metrics
) -> Starlette:
    """What a worker-only process serves."""
    return Starlette(routes=ops_routes(store, broker_connected, metrics, broker_required=True))
