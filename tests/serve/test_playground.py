"""The playground page in a real headless browser: Debian's chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.serve.conftest import API_KEY


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        message = "no chromium on PATH (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])  # fmt: skip
        yield browser
        browser.close()


def watch_failures(page) -> list[str]:
    """Every console error, failed request and 4xx/5xx response of ``page`` (a missing favicon
    shows up as a console error 'Failed to load resource: ... 404')."""
    failures: list[str] = []

    def console(message) -> None:
        if message.type == "error":
            failures.append(f"console: {message.text}")

    def response(r) -> None:
        if r.status >= 400:
            failures.append(f"{r.status}: {r.url}")

    page.on("console", console)
    page.on("requestfailed", lambda r: failures.append(f"failed: {r.url} {r.failure}"))
    page.on("response", response)
    return failures


def test_prompt_streams_generated_text_with_tokens_per_second(browser, gpt2_server, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    failures = watch_failures(page)
    page.goto(gpt2_server.url + "/")
    page.wait_for_selector("#causal:not([hidden])")
    page.wait_for_load_state("networkidle")  # the browser has asked for everything it will
    assert failures == []
    assert page.text_content("#model") == "demo"  # the recipe's name, not the folder's
    assert page.input_value("#prompt") == "Он долго бродил по"  # the model card's widget text
    page.fill("#api-key", API_KEY)
    page.fill("#prompt", "Когда он вернулся домой, было уже")
    page.fill("#max-tokens", "40")
    page.fill("#seed", "3")
    page.uncheck("#stop-at-eos")  # the tiny model may end its text after a few tokens
    # Count the mutations of the output, not the observer's callbacks: the observer batches every
    # mutation made in one task into one callback, so a fast model whose whole stream arrives in
    # one network read gives a single callback even though the page appended chunk by chunk.
    page.evaluate("""() => { window.updates = 0;
        new MutationObserver((records) => window.updates += records.length)
        .observe(document.getElementById('output'), {subtree: true, childList: true,
                 characterData: true}); }""")
    page.click("#generate")
    page.wait_for_function("document.getElementById('stats').textContent.includes('finished')",
                           timeout=60_000)  # fmt: skip
    generated = page.text_content("#generated")
    stats = page.text_content("#stats")
    page.screenshot(path=str(tmp_path / "playground-generate.png"), full_page=True)
    assert generated.strip(), stats
    assert "tokens/s" in stats and "error" not in (page.get_attribute("#stats", "class") or "")
    assert stats.startswith("40 tokens") and "finished: length" in stats, stats
    assert page.evaluate("window.updates") > 3  # appended event by event, not in one block
    assert page.text_content("#output").startswith("Когда он вернулся домой, было уже")
    page.close()


def test_fill_mask_box_shows_top_predictions(browser, bert_server, tmp_path):
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    failures = watch_failures(page)
    page.goto(bert_server.url + "/")
    page.wait_for_selector("#masked:not([hidden])")
    page.wait_for_load_state("networkidle")
    assert failures == []
    assert page.input_value("#mask-input") == "Он долго [MASK] по лесу."
    page.click("#fill")
    page.wait_for_selector("#fill-output table tr:nth-child(6)")  # header + 5 predictions
    page.screenshot(path=str(tmp_path / "playground-fill-mask.png"), full_page=True)
    rows = page.locator("#fill-output table tr").all_text_contents()
    assert len(rows) == 6
    probabilities = [float(page.locator(f"#fill-output tr:nth-child({i}) td:nth-child(2)")
                           .text_content()) for i in range(2, 7)]  # fmt: skip
    assert probabilities == sorted(probabilities, reverse=True) and probabilities[0] > 0
    page.close()
