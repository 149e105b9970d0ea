"""The operator page (`/ops`) in headless Chromium, against real processes: it stays behind a
login with ADMIN_TOKEN, renders, shows a running campaign's progress moving without a reload,
and logs out. The screenshot is kept as `var/test-artifacts/ops.png`."""

from __future__ import annotations

import socket

import pytest
import requests

from tests.e2e.browser import start_browser
from tests.e2e.stack import ROOT, wait_for

ARTIFACTS = ROOT / "var" / "test-artifacts"
FAST_CLOCK = {"SCHEDULER_LOCK_TTL_MS": "1500", "SCHEDULER_LOCK_RETRY_MS": "500"}


@pytest.fixture
def browser(tmp_path):
    driver = start_browser(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


def campaign_row(browser, campaign_id: int) -> dict[str, str] | None:
    """The campaign's row as the page shows it (its data attributes), or None."""
    return browser.execute_script(
        "const row = document.querySelector(`tr.campaign[data-id='${arguments[0]}']`);"
        "return row ? Object.assign({}, row.dataset, {text: row.innerText}) : null;",
        campaign_id,
    )


def text_of(browser, selector: str) -> str:
    return browser.execute_script(
        "return document.querySelector(arguments[0]).innerText;", selector
    )


def submit_login(browser, token: str) -> None:
    """Type the token into the login form and submit it, as an operator does."""
    from selenium.webdriver.common.by import By

    field = browser.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    browser.find_element(By.ID, "login").click()


def test_the_operator_page_shows_a_campaign_progressing_live(make_stack, browser, tmp_path):
    # Given a worker whose provider answers slowly (so the campaign runs for a while), a clock,
    # and a 3,000-recipient campaign in 30 batches
    stack = make_stack(SEND_BATCH_SIZE="100", PROMETHEUS_MULTIPROC_DIR=str(tmp_path), **FAST_CLOCK)
    stack.start_sim("--latency-ms", "400", "--dlr-delay-ms", "50")
    stack.start_web()
    worker = stack.start_worker(threads=1)
    clock = stack.start_clock()
    _, key = stack.create_shop("ops-page.example", credits=10_000)
    stack.import_contacts(key, 3000)
    created = stack.call(
        "POST",
        "/campaigns",
        key,
        json={
            "name": "Winter <b>sale</b>",
            "text": "Winter sale, reply STOP to opt out",
            "append_unsubscribe": False,
        },
    )
    campaign_id = created.json()["id"]

    # The page is not public, and the admin token in its URL (as it once was) opens nothing
    admin = stack.env["ADMIN_TOKEN"]
    for url in (f"{stack.web}/ops", f"{stack.web}/ops?token={admin}"):
        answer = requests.get(url, timeout=5, allow_redirects=False)
        assert (
            answer.status_code == 303 and answer.headers["location"] == "ops/login"
        )  # relative: under a prefix too
        assert "set-cookie" not in answer.headers
    assert requests.get(f"{stack.web}/ops/state", timeout=5).status_code == 401

    # When an operator opens it, is sent to the login form, and types a wrong token
    browser.get(f"{stack.web}/ops")
    assert browser.current_url == f"{stack.web}/ops/login"
    submit_login(browser, "wrong")
    # Then the form says so, and the page stays closed
    wait_for(lambda: "not the admin token" in text_of(browser, "#error"), 10, "the refusal")
    assert browser.get_cookies() == []

    # When the operator types the admin token
    submit_login(browser, admin)

    # Then the form opens a session (a cookie scripts cannot read), and the page renders
    wait_for(lambda: browser.current_url == f"{stack.web}/ops", 10, "the page after login")
    (cookie,) = browser.get_cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ops"
    assert admin not in cookie["value"]
    assert browser.execute_script("return document.cookie;") == ""
    assert browser.title == "Astronote operations"
    wait_for(lambda: text_of(browser, "#status") == "OK", 30, "the page to say OK")
    browser.execute_script("window.notReloaded = true;")

    # When the campaign is launched
    enqueued = stack.call("POST", f"/campaigns/{campaign_id}/enqueue", key)
    assert enqueued.status_code == 202, enqueued.text

    # Then its progress bar appears and moves while it sends, without a reload
    first = wait_for(
        lambda: (
            lambda r: r if r and r["status"] == "sending" and 0 < int(r["done"]) < 3000 else None
        )(campaign_row(browser, campaign_id)),
        30,
        "the campaign sending on the page",
    )
    later = wait_for(
        lambda: (lambda r: r if int(r["done"]) > int(first["done"]) else None)(
            campaign_row(browser, campaign_id)
        ),
        15,
        "the progress to move",
    )
    assert later["status"] == "sending" and int(later["done"]) < 3000, later
    assert float(later["percent"]) > float(first["percent"])
    assert browser.execute_script("return window.notReloaded === true;")
    # ...merchant text is shown as text, never as markup
    assert "Winter <b>sale</b>" in later["text"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "ops.png"))

    # ...next to the queues, the worker consuming them and the leader
    queues = text_of(browser, "#queues")
    assert "sms-send" in queues and "delivery-status-update" in queues
    assert f"{socket.gethostname()}:" in text_of(browser, "#workers")
    assert f"leader {socket.gethostname()}:{clock.pid}" in text_of(browser, "#leader")

    # And the campaign reaches 100% on the page
    done = wait_for(
        lambda: (lambda r: r if r["status"] == "completed" else None)(
            campaign_row(browser, campaign_id)
        ),
        90,
        "the campaign to complete on the page",
    )
    assert (done["done"], done["sent"], done["percent"]) == ("3000", "3000", "100")
    browser.save_screenshot(str(ARTIFACTS / "ops-completed.png"))

    # When the worker dies, the page turns red and says why, within a minute
    stack.kill("worker")
    wait_for(
        lambda: "no live worker" in text_of(browser, "#problems"),
        60,
        "the page to report the dead worker",
        interval=0.5,
    )
    assert text_of(browser, "#status") == "NOT OK"
    assert worker.poll() is not None
    browser.save_screenshot(str(ARTIFACTS / "ops-no-worker.png"))

    # When the operator logs out
    browser.execute_script("document.getElementById('logout').click();")

    # Then the session is gone: back at the form, and the page sends there again
    wait_for(lambda: browser.current_url == f"{stack.web}/ops/login", 10, "the form after logout")
    assert browser.get_cookies() == []
    browser.get(f"{stack.web}/ops")
    assert browser.current_url == f"{stack.web}/ops/login"
