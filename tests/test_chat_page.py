"""The chat page at `/`, in a real headless browser: Debian's chromium driven by
Playwright's Python API (Playwright's own browser download is not reachable
here; .ci/run installs chromium). A user types a question, the reply streams
in, the page shows its tok/s, and a second question continues the conversation.
The oracle: the same conversation answered by `generate` alone (greedy).
Budget: ~5 s (chromium's start-up is most of it).
"""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import expect, sync_playwright
from serving import GOLDEN, MODEL_ID, alone, chat_ids, live_server

from fs_mlx import load

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def lm():
    return load(GOLDEN / "qwen3-tiny", kernels="mlx")


def test_chat_page_streams_replies_and_keeps_the_conversation(lm):
    first_q, second_q = "Hello there, who are you?", "And what can you do?"
    first = alone(lm, chat_ids(lm, [{"role": "user", "content": first_q}]), 24)[0]
    second = alone(lm, chat_ids(lm, [{"role": "user", "content": first_q},
                                     {"role": "assistant", "content": first},
                                     {"role": "user", "content": second_q}]), 24)[0]

    with live_server(lm, max_batch=2) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            expect(page.locator("#model")).to_have_text(MODEL_ID)
            page.fill("#temperature", "0")  # greedy, to compare with the oracle
            page.fill("#max-tokens", "24")

            page.fill("#prompt", first_q)
            page.press("#prompt", "Enter")
            stats = page.locator(".assistant .stats")
            expect(stats.first).to_contain_text("tok/s", timeout=20_000)
            assert page.locator(".assistant .text").first.text_content() == first

            page.fill("#prompt", second_q)
            page.click("#send")
            expect(stats.nth(1)).to_contain_text("tok/s", timeout=20_000)
            assert page.locator(".assistant .text").nth(1).text_content() == second
            assert page.locator(".user .text").all_text_contents() == [first_q, second_q]
        finally:
            browser.close()
