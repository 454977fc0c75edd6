"""The operator's endpoints every process serves: /healthz, /readyz, /metrics,
and POST /-/reload.

A worker-only process serves these alone (on `listen`), so its probes work,
the metrics only workers produce (deliveries finished, retries, 429s, Bot API
latency, the backlog) are scraped, and its rate limits and delivery settings
can be reloaded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.config import Reloaded
from bridge.errors import BridgeError, StoreUnavailable
from bridge.metrics import Metrics
from bridge.store import Store

#: Re-reads the config file and puts it in force, or raises and changes nothing.
Reload = Callable[[], Awaitable[Reloaded]]


def ops_routes(
    store: Store,
    broker_connected: Callable[[], bool],
    metrics: Metrics,
    *,
    broker_required: bool,
    reload: Reload | None = None,
    ingress_connected: Callable[[], bool] | None = None,
) -> list[Route]:
    """``broker_required``: a worker without its broker does no work, so it is
    not ready; a receiver still stores webhooks (the scheduler publishes them
    later), so for it the broker is only reported. So is the RabbitMQ ingress
    (``ingress_connected``, None without one): while it is away, producers'
    messages wait in their queue, and HTTP is served as before. ``reload``:
    None when the process was started without a config file."""

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
        body: dict[str, object] = {
            "status": "not ready" if problems else "ready",
            "problems": problems,
            "broker_connected": connected,
        }
        if ingress_connected is not None:
            body["ingress_connected"] = ingress_connected()
        return JSONResponse(body, status_code=503 if problems else 200)

    async def scrape(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def reload_config(request: Request) -> Response:
        # Alertmanager's convention: POST /-/reload, 200 when the new config is
        # in force, 500 (old config kept) when it is not.
        if reload is None:
            return _error("started without a config file; nothing to reload")
        try:
            reloaded = await reload()
        except BridgeError as exc:
            return _error(f"reload failed, the previous config stays in force: {exc}")
        return JSONResponse(
            {
                "status": "ok",
                "applied": reloaded.applied,
                "needs_restart": reloaded.needs_restart,
                "summary": reloaded.summary(),
            }
        )

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
        Route("/-/reload", reload_config, methods=["POST"]),
    ]


def _error(message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message}, status_code=500)


def create_ops_app(
    store: Store,
    broker_connected: Callable[[], bool],
    metrics: Metrics,
    *,
    reload: Reload | None = None,
) -> Starlette:
    """What a worker-only process serves."""
    return Starlette(
        routes=ops_routes(store, broker_connected, metrics, broker_required=True, reload=reload)
    )
