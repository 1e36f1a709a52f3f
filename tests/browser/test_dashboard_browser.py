"""The dashboard's scenarios in headless chromium (see conftest.py for the world behind it)."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chromium.webdriver import ChromiumDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from reminderd.testing import add_api_key

from .conftest import PHONE, WIDE, Site, screenshot_dir, sign_in

pytestmark = pytest.mark.slow

PAGES = ("/", "/upcoming", "/feed", "/messages?q=booking", "/dead", "/broadcasts")


def wait(driver: WebDriver, timeout_s: float = 10) -> WebDriverWait[WebDriver]:
    """A bounded wait; an element the overview's refresh replaced meanwhile is read again."""
    return WebDriverWait(driver, timeout_s, poll_frequency=0.02,
                         ignored_exceptions=(StaleElementReferenceException,))


def test_signing_in_shows_the_overview_and_signing_out_ends_it(browser: WebDriver, site: Site) -> None:
    browser.get(site.url + "/")
    assert "/dashboard/login" in browser.current_url  # not signed in yet
    sign_in(browser, site, site.operator_key)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    assert "ops-alice" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    cookie = browser.get_cookie("reminderd_session")
    assert cookie is not None and cookie["httpOnly"] is True
    assert browser.execute_script("return document.cookie").find("reminderd_session") == -1
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    wait(browser).until(lambda d: "/dashboard/login" in d.current_url)
    browser.get(site.url + "/dead")
    assert "/dashboard/login" in browser.current_url


def test_the_overview_counts_equal_what_sql_says(browser: WebDriver, site: Site) -> None:
    site.sql(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status)"
        " SELECT t, 'count:' || t || ':' || s || ':' || g, now() + interval '2 hours', s"
        " FROM unnest(ARRAY['acme', 'globex']) t, unnest(ARRAY['pending', 'paused', 'dead']) s,"
        "      generate_series(1, 1 + length(t) + length(s)) g"
    )
    sign_in(browser, site, site.operator_key)
    browser.get(site.url + "/")
    expected = site.sql(
        "SELECT t.id AS tenant, count(*) FILTER (WHERE m.status = 'pending') AS pending,"
        " count(*) FILTER (WHERE m.status = 'paused') AS paused,"
        " count(*) FILTER (WHERE m.status = 'dead') AS dead,"
        " count(*) FILTER (WHERE m.status = 'picked') AS picked"
        " FROM reminderd.tenants t LEFT JOIN reminderd.scheduled_messages m ON m.tenant_id = t.id GROUP BY 1"
    )

    columns = ("pending", "paused", "dead", "picked")

    def shown(d: WebDriver) -> dict[tuple[str, str], int]:
        def cell(tenant: str, column: str) -> int:
            text = d.find_element(By.CSS_SELECTOR, f'td[data-tenant="{tenant}"][data-count="{column}"]').text
            return int(text.replace(",", ""))

        return {(row["tenant"], c): cell(row["tenant"], c) for row in expected for c in columns}

    wanted = {(row["tenant"], c): row[c] for row in expected for c in columns}
    # The counts are at most 2 s old (one count serves every open overview) and refresh every 5 s.
    wait(browser, 15).until(lambda d: shown(d) == wanted)
    wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-total="daemons"]').text == "1")
    pending = str(sum(r["pending"] for r in expected))
    wait(browser).until(lambda d: d.find_element(
        By.CSS_SELECTOR, '[data-total="pending"]').text.replace(",", "") == pending)
    # It refreshes itself in place (no reload: what the page holds survives).
    browser.execute_script("window.reminderdMarker = 1;")
    site.sql("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at) VALUES"
             " ('acme', 'count:later', now() + interval '3 hours')")
    pending = site.value("SELECT count(*) FROM reminderd.scheduled_messages WHERE tenant_id = 'acme'"
                         " AND status = 'pending'")
    wait(browser, 15).until(lambda d: d.find_element(
        By.CSS_SELECTOR, 'td[data-tenant="acme"][data-count="pending"]').text.replace(",", "") == str(pending))
    assert browser.execute_script("return window.reminderdMarker") == 1


def test_an_open_feed_of_a_key_revoked_says_signed_out_and_stops_listening(
    browser: WebDriver, site: Site
) -> None:
    """The stream checks its session every 5 s (dashboard.SESSION_RECHECK_S) and says
    `signed-out`: the page stops listening, rather than reconnecting to a 401."""
    key = site.background.run(add_api_key(site.db, None, name="ops-leaving"))
    sign_in(browser, site, key)
    browser.get(site.url + "/feed")
    wait(browser).until(lambda d: d.find_element(By.ID, "feed-state").get_attribute("data-state") == "live")
    site.sql("UPDATE reminderd.api_keys SET revoked_at = now() WHERE name = 'ops-leaving'")
    wait(browser, 15).until(
        lambda d: d.find_element(By.ID, "feed-state").get_attribute("data-state") == "signed-out")
    assert "signed out" in browser.find_element(By.ID, "feed-state").text


def test_a_message_appears_in_the_live_feed_within_a_second_of_its_delivery(
    browser: WebDriver, site: Site
) -> None:
    sign_in(browser, site, site.operator_key)
    browser.get(site.url + "/feed")
    wait(browser).until(lambda d: d.find_element(By.ID, "feed-state").get_attribute("data-state") == "live")
    browser.execute_script("window.reminderdMarker = 2;")
    site.sql("SELECT reminderd.schedule('acme', 'booking:feed:1', now() + interval '3 seconds',"
             " '{\"to\": \"+441234\"}')")
    site.background.run(site.receiver.wait_for(
        lambda got: any(r.message["ref_id"] == "booking:feed:1" for r in got), 20), 30)
    delivered_at = next(r.received_at for r in site.receiver.received
                        if r.message["ref_id"] == "booking:feed:1")
    row = wait(browser, 5).until(lambda d: d.find_elements(
        By.XPATH, "//tbody[@id='feed-rows']/tr[.//a[text()='booking:feed:1']]"))[0]
    shown_at = int(row.get_attribute("data-shown-at") or 0) / 1000
    assert 0 <= shown_at - delivered_at < 1.0, f"shown {shown_at - delivered_at:.3f} s after delivery"
    assert row.get_attribute("data-kind") == "delivered"
    assert browser.execute_script("return window.reminderdMarker") == 2  # pushed, not reloaded
    assert browser.find_element(By.CSS_SELECTOR, "#feed-rows tr").get_attribute("data-id") == row.get_attribute(
        "data-id")  # newest first

    # Pausing keeps what is on screen; resuming shows what came meanwhile.
    browser.find_element(By.ID, "feed-pause").click()
    shown = [r.get_attribute("data-id") for r in browser.find_elements(By.CSS_SELECTOR, "#feed-rows tr")]
    site.sql("SELECT reminderd.schedule('acme', 'booking:feed:2', now())")
    wait(browser, 15).until(lambda d: "1 new" in d.find_element(By.ID, "feed-state").text)
    still = [r.get_attribute("data-id") for r in browser.find_elements(By.CSS_SELECTOR, "#feed-rows tr")]
    assert still == shown
    browser.find_element(By.ID, "feed-pause").click()
    wait(browser).until(lambda d: d.find_elements(By.XPATH, "//a[text()='booking:feed:2']"))

    # Its ref finds its story: the attempt and the trail.
    browser.get(site.url + "/messages?q=booking:feed:1")
    browser.find_element(By.XPATH, "//table[@id='results']//a[text()='booking:feed:1']").click()
    wait(browser).until(lambda d: d.find_elements(By.ID, "attempts"))
    attempts = browser.find_element(By.ID, "attempts").text
    assert "200" in attempts and "msg_" in attempts
    trail = browser.find_element(By.ID, "trail").text
    assert "created" in trail and "fired" in trail
    assert "Delivered" in browser.find_element(By.ID, "why").text
    browser.save_screenshot(str(screenshot_dir() / "dashboard-message.png"))


def test_a_dead_letter_requeued_from_the_page_is_delivered(browser: WebDriver, site: Site) -> None:
    site.sql(
        "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, status, attempts, last_error)"
        " VALUES ('acme', 'booking:dead:1', now() - interval '5 minutes', 'dead', 8,"
        "         'gave up after 8 attempts: HTTP 503')"
    )
    message_id = site.value("SELECT id FROM reminderd.scheduled_messages WHERE ref_id = 'booking:dead:1'")
    sign_in(browser, site, site.operator_key)
    browser.get(site.url + "/dead?tenant=acme")
    browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{message_id}"] button[name="only"]').click()
    wait(browser).until(lambda d: d.find_elements(By.ID, "confirm"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Requeue 1 dead letter?"
    browser.find_element(By.ID, "confirm").click()
    wait(browser).until(lambda d: d.find_elements(By.ID, "done"))
    assert browser.find_element(By.ID, "done").text == "1 requeued"
    site.background.run(site.receiver.wait_for(
        lambda got: any(r.message["ref_id"] == "booking:dead:1" for r in got), 20), 30)
    assert site.value("SELECT status FROM reminderd.scheduled_messages WHERE id = $1", message_id) == "sent"
    actor = site.value("SELECT on_behalf_of FROM reminderd.events WHERE message_id = $1 AND event = 'requeued'",
                       message_id)
    assert actor == f"{site.operator_key[:15]} (ops-alice)"


def test_a_tenant_key_cannot_reach_another_tenants_message_by_url(browser: WebDriver, site: Site) -> None:
    site.sql("SELECT reminderd.schedule('acme', 'booking:private', now() + interval '1 day')")
    theirs = site.value("SELECT id FROM reminderd.scheduled_messages WHERE ref_id = 'booking:private'")
    sign_in(browser, site, site.globex_key)
    assert "tenant globex" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    browser.get(f"{site.url}/messages/{theirs}")
    refused = browser.find_element(By.TAG_NAME, "main").text
    browser.get(f"{site.url}/messages/987654321")
    missing = browser.find_element(By.TAG_NAME, "main").text
    assert refused.replace(str(theirs), "N") == missing.replace("987654321", "N")
    assert "booking:private" not in browser.page_source and "Not found" in refused
    browser.get(site.url + "/?tenant=acme")
    assert not browser.find_elements(By.CSS_SELECTOR, 'td[data-tenant="acme"]')


def test_a_script_in_a_ref_or_payload_renders_inert(browser: WebDriver, site: Site) -> None:
    evil = "<script>window.reminderdPwned = 1</script><img src=x onerror=window.reminderdPwned=2>"
    site.sql("SELECT reminderd.schedule('acme', $1, now() + interval '1 day',"
             " jsonb_build_object('text', $1::text))", evil)
    message_id = site.value("SELECT id FROM reminderd.scheduled_messages WHERE ref_id = $1", evil)
    sign_in(browser, site, site.operator_key)
    for path in (f"/messages/{message_id}", "/messages?q=%3Cscript", "/upcoming?tenant=acme"):
        browser.get(site.url + path)
        assert browser.execute_script("return window.reminderdPwned === undefined"), path
    browser.get(f"{site.url}/messages/{message_id}")
    assert browser.find_element(By.ID, "ref").text == evil
    assert evil in browser.find_element(By.ID, "payload").text
    assert not browser.find_elements(By.CSS_SELECTOR, "main img")


@pytest.mark.parametrize("size", [WIDE, PHONE], ids=["1280px", "390px"])
def test_every_page_fits_the_width_of_the_screen(browser: WebDriver, site: Site, size: tuple[int, int]) -> None:
    site.sql("SELECT reminderd.schedule('acme', 'booking:' || repeat('very-long-ref-', 12),"
             " now() + interval '1 hour')")
    message_id = site.value("SELECT max(id) FROM reminderd.scheduled_messages")
    sign_in(browser, site, site.operator_key)
    browser.set_window_size(*size)
    assert abs(browser.execute_script("return window.innerWidth") - size[0]) <= 16
    for path in (*PAGES, f"/messages/{message_id}", "/login"):
        browser.get(site.url + path)
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than a {size[0]}px screen"
    browser.get(site.url + "/")
    suffix = "-phone" if size == PHONE else ""
    browser.save_screenshot(str(screenshot_dir() / f"dashboard-overview{suffix}.png"))


def test_upcoming_shades_a_tenants_quiet_hours_and_lists_a_bars_messages(
    browser: WebDriver, site: Site
) -> None:
    site.sql("UPDATE reminderd.tenants SET quiet_start = '21:00', quiet_end = '07:00', calendar = 'GB'"
             " WHERE id = 'globex'")
    site.sql("INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, timezone)"
             " SELECT 'globex', 'upcoming:' || g,"
             "        now() + interval '2 minutes' + (g * g % 2870) * interval '1 minute',"
             "        'Europe/London' FROM generate_series(1, 400) g")
    sign_in(browser, site, site.operator_key)
    browser.get(site.url + "/upcoming?tenant=globex")
    assert browser.find_element(By.NAME, "tz").get_attribute("value") == "Europe/London"  # its next message's
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.span.quiet")) >= 2
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.chart a.bar-link")
    assert len(bars) == 48 + 60
    busy = max(bars[:48], key=lambda b: int(b.get_attribute("data-messages") or 0))
    count = int(busy.get_attribute("data-messages") or 0)
    assert count > 0
    browser.save_screenshot(str(screenshot_dir() / "dashboard-upcoming.png"))
    browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", busy)
    wait(browser).until(lambda d: d.find_elements(By.ID, "bar"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bar tbody tr")) == count


def test_a_broadcast_awaiting_approval_is_approved_from_the_page_by_a_second_person_and_delivered(
    browser: WebDriver, site: Site
) -> None:
    """The overview says a broadcast awaits approval; its page shows what it would send per UTC
    hour; an operator other than its creator approves it (the form and its CSRF token, in a real
    browser) and the daemon delivers its messages, their trail saying who approved."""
    site.sql("SELECT reminderd.upsert_contacts('acme', $1::jsonb)",
             '[{"contact_id": "bq_1", "timezone": "UTC"}, {"contact_id": "bq_2", "timezone": "UTC"}]')
    site.sql("UPDATE reminderd.tenants SET approval_threshold = 1 WHERE id = 'acme'")
    try:
        broadcast_id = site.value(
            "SELECT reminderd.broadcast('acme', 'bq', (now() AT TIME ZONE 'UTC') + interval '3 seconds',"
            " contact_ids => ARRAY['bq_1', 'bq_2'], category => 'news', actor => 'alice')")
    finally:
        site.sql("UPDATE reminderd.tenants SET approval_threshold = NULL WHERE id = 'acme'")
    hour = site.value("SELECT to_char(min(fire_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:00')"
                      " FROM reminderd.scheduled_messages WHERE broadcast_id = $1", broadcast_id)
    sign_in(browser, site, site.operator_key)
    browser.get(site.url + "/")
    cta = wait(browser, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#awaiting-cta a"))[0]
    assert "awaiting approval" in cta.text
    cta.click()
    wait(browser).until(lambda d: "/broadcasts?awaiting=1" in d.current_url)
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-broadcast="{broadcast_id}"]')
    assert "2 messages would go out" in row.text and f"{hour} UTC 2" in row.text
    row.find_element(By.LINK_TEXT, "bq").click()
    wait(browser).until(lambda d: d.find_elements(By.ID, "approval"))
    assert "created by alice" in browser.find_element(By.ID, "approval").text
    assert f"{hour} UTC 2" in browser.find_element(By.ID, "per-hour").text
    browser.save_screenshot(str(screenshot_dir() / "dashboard-broadcast.png"))
    approve = browser.find_element(By.ID, "approve").find_element(By.XPATH, "./ancestor::form")
    approve.find_element(By.NAME, "note").send_keys("copy checked")
    browser.find_element(By.ID, "approve").click()
    wait(browser).until(lambda d: d.find_elements(By.ID, "done"))
    assert browser.find_element(By.ID, "done").text == "approved: 2 messages now pending"
    who = f"{site.operator_key[:15]} (ops-alice)"
    assert f"approved by {who}" in browser.find_element(By.ID, "decision").text

    site.background.run(site.receiver.wait_for(
        lambda got: {r.message["ref_id"] for r in got} >= {"bq:bq_1", "bq:bq_2"}, 20), 30)
    # The outcomes are recorded just after the callbacks are answered.
    wait(browser, 15).until(lambda _: site.value(
        "SELECT sent FROM reminderd.broadcasts WHERE id = $1", broadcast_id) == 2)
    browser.get(site.url + f"/broadcasts/{broadcast_id}")
    assert browser.find_element(By.CSS_SELECTOR, '#progress [data-count="sent"]').text == "2"
    assert browser.find_element(By.CSS_SELECTOR, "#progress [data-done]").text == "yes"
    browser.find_element(By.ID, "messages-link").click()
    browser.find_element(By.XPATH, "//table[@id='results']//a[text()='bq:bq_1']").click()
    wait(browser).until(lambda d: d.find_elements(By.ID, "trail"))
    trail = browser.find_element(By.ID, "trail").text
    assert "approved" in trail and who in trail and "fired" in trail


COUNT_INTERVALS = """
window.__intervals = {set: [], cleared: []};
const setInterval_ = window.setInterval, clearInterval_ = window.clearInterval;
window.setInterval = function (f, ms) {
  const id = setInterval_(f, ms); window.__intervals.set.push(id); return id;
};
window.clearInterval = function (id) { window.__intervals.cleared.push(id); return clearInterval_(id); };
"""


def test_the_overview_says_when_its_session_ended_and_stops_asking(browser: WebDriver, site: Site) -> None:
    hook = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_INTERVALS})
    try:
        sign_in(browser, site, site.operator_key)
        browser.get(site.url + "/")
        said = browser.find_element(By.ID, "live-state")
        assert not said.is_displayed()
        # Signed out elsewhere (here: the page's own sign-out form, sent without leaving the page).
        status = browser.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const form = document.querySelector('form[action$="/logout"]');
            fetch(form.action, {method: 'POST', body: new URLSearchParams(new FormData(form)),
                                credentials: 'same-origin', redirect: 'manual'}).then(a => done(a.type));
        """)
        assert status == "opaqueredirect"  # 303 to the sign-in page: signed out
        wait(browser, 15).until(lambda d: said.is_displayed())
        assert said.text == "signed out: reload to sign in"
        intervals = browser.execute_script("return window.__intervals")
        assert intervals["set"] and set(intervals["set"]) <= set(intervals["cleared"])
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": hook["identifier"]})


def console(driver: WebDriver) -> list[dict[str, Any]]:
    """What the page logged to its console since the last call."""
    assert isinstance(driver, ChromiumDriver)
    logged: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]  # selenium: untyped
    return logged


def test_a_page_names_its_icon_so_the_browser_asks_for_no_favicon_ico(browser: WebDriver, site: Site) -> None:
    console(browser)  # what earlier tests logged
    sign_in(browser, site, site.operator_key)
    for path in PAGES:
        browser.get(site.url + path)
    assert [e["message"] for e in console(browser) if "favicon" in e["message"]] == []
    icon = browser.execute_script("return document.querySelector('link[rel=icon]').href")
    assert "/dashboard/static/favicon.svg" in icon
