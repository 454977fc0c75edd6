"""The offline Telegram, composed: the Bot API double (``botapi.py``), the chat
page (``page.py``) and the sandbox Alertmanager (``alertmanager.py``) on one
port, so the demo has one URL to open and the bot one ``api_url``."""

from __future__ import annotations

from aiohttp import web

from bridge.sandbox.alertmanager import SandboxAlertmanager
from bridge.sandbox.botapi import MAX_REQUEST, TelegramDouble
from bridge.sandbox.page import add_page_routes
from bridge.sandbox.receipts import ReceiptInbox


class Sandbox:
    def __init__(
        self, *, token: str = "123:ABC", latency: float = 0.0, enforce_rate_limits: bool = False
    ) -> None:
        self.telegram = TelegramDouble(
            token=token, latency=latency, enforce_rate_limits=enforce_rate_limits
        )
        self.alertmanager = SandboxAlertmanager()
        # Where the chat page's forms send to (connect_bridge).
        self.bridge_url: str | None = None
        self.bridge_token: str | None = None
        self.producer_token: str | None = None
        # The demo producer's receipt endpoint: what the bridge reported, newest last.
        self.receipts = ReceiptInbox()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=MAX_REQUEST)
        self.telegram.add_routes(app)
        self.alertmanager.add_routes(app)
        add_page_routes(app, self)
        self.receipts.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        host, bound = self._runner.addresses[0][:2]  # port 0: the one the system chose
        self.url = self.telegram.url = f"http://{host}:{bound}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def connect_bridge(
        self,
        url: str,
        bearer_token: str | None = None,
        *,
        producer_token: str | None = None,
        receipt_secret: str | None = None,
    ) -> None:
        """The bridge the chat page's forms post to: payloads to ``url``/alertmanager,
        messages to ``url``/v1/messages as a producer with ``producer_token``; the
        receipts it sends back are checked against ``receipt_secret``."""
        self.bridge_url = url.rstrip("/")
        self.bridge_token = bearer_token
        self.producer_token = producer_token
        self.receipts.secret = receipt_secret
