"""The sandbox's chat page in a real browser: Debian's Chromium, driven by Playwright.

What a newcomer does with `alertbridge demo`: open the page, see the alerts
as Telegram would show them, press Ack, post a payload of their own. The
screenshot stays in tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.processes import running_demo

CHROMIUM = "/usr/bin/chromium"  # Debian's; .ci/setup installs it
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert shutil.which(CHROMIUM), "Debian's chromium is missing: run .ci/setup"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        await browser.close()


def message(page: Page, chat_id: int, message_id: int):  # type: ignore[no-untyped-def]
    return page.locator(f'section[data-chat-id="{chat_id}"] .msg[data-message-id="{message_id}"]')


async def test_the_page_shows_the_alerts_and_ack_changes_the_message(browser: Browser) -> None:
    async with running_demo() as (_, sandbox):
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.goto(str(sandbox.base_url))

        storm_alert = message(page, -1002, 1)
        await expect(storm_alert).to_contain_text("ReplicaLag0")
        # Telegram's <b> is a <b> here: built from the entities, not from raw HTML.
        await expect(storm_alert.locator("b").first).to_contain_text("ReplicaLag0")
        await expect(message(page, -1002, 2)).to_contain_text("Storm digest")
        # The group's first message was edited to its resolved state.
        await expect(message(page, -1001, 1)).to_contain_text("RESOLVED")
        await expect(message(page, -1001, 1).locator(".meta")).to_contain_text("edited")

        await storm_alert.get_by_role("button", name="✋ Ack").click()
        await expect(storm_alert).to_contain_text("Acked by", timeout=20_000)
        await expect(storm_alert.get_by_role("button", name="✋ Ack")).to_have_count(0)

        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "sandbox-chat.png"), full_page=True)


async def test_a_payload_posted_from_the_page_is_rendered_with_its_label_literal(
    browser: Browser,
) -> None:
    async with running_demo() as (_, sandbox):
        page = await browser.new_page()
        await page.goto(str(sandbox.base_url))
        await page.get_by_role("button", name="POST /alertmanager").click()
        await expect(page.locator("#answer")).to_contain_text("200", timeout=10_000)
        posted = page.locator('section[data-chat-id="-1001"] .msg').filter(has_text="TryMe")
        # The sample's label holds "<b>&</b>": shown as text, never as markup.
        await expect(posted).to_contain_text("web-1 <b>&</b>", timeout=20_000)
        await page.screenshot(path=str(ARTIFACTS / "sandbox-own-payload.png"), full_page=True)


async def test_a_message_sent_from_the_page_arrives_once_and_shows_its_status(
    browser: Browser,
) -> None:
    async with running_demo() as (_, sandbox):
        page = await browser.new_page()
        await page.goto(str(sandbox.base_url))
        message_id = await page.locator("#send-id").input_value()
        await page.locator("#send-text").fill("Export <b>ready</b> for a<i>b</i>c")
        await page.get_by_role("button", name="POST /v1/messages").click()
        await expect(page.locator("#send-answer")).to_contain_text("202", timeout=10_000)
        sent = page.locator('section[data-chat-id="-1001"] .msg').filter(has_text="Export ready")
        await expect(sent.locator("b")).to_have_text("ready", timeout=20_000)
        await expect(page.locator("#send-status")).to_contain_text(
            f"status of {message_id}: delivered", timeout=20_000
        )
        # The demo producer's receipt: signed, checked by the sandbox, shown once.
        receipt = page.locator("#receipts li").filter(has_text=message_id)
        await expect(receipt).to_contain_text("message.delivered", timeout=20_000)
        await expect(receipt).to_contain_text("signature valid")
        # The form took a new message_id for the next message: sending again is a new one.
        assert await page.locator("#send-id").input_value() != message_id
        await expect(sent).to_have_count(1)
        await page.screenshot(path=str(ARTIFACTS / "sandbox-own-message.png"), full_page=True)
