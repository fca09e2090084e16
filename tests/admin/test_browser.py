"""The admin page in a real browser: Debian's Chromium (/usr/bin/chromium), driven by Playwright.

Playwright's own browser download cannot work here, so the test launches the system Chromium with
`executable_path`; `.ci/browser-deps` installs it. Without Chromium or Playwright the tests are skipped,
except under CI=true, where that is a failure.

Screenshots of the list, the form, the overview and a job go to tests/artifacts/ on every run; with
SMSFLEET_UPDATE_SCREENSHOTS=1 they also replace the README's copies in docs/img/.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from admin import AdminConfig, build_app
from smsfleet.senders import SenderRegistry, parse_sender, receiving_url
from smsfleet.settings import Settings
from smsfleet.topology import Names, message
from tests.samples import sample_sender
from workers import SendPolicy, run_workers, stats
from workers.ledger import Ledger

pytestmark = pytest.mark.slow

CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS_IMG = ROOT / "docs" / "img"
TOKEN = "browser-test-token-0123456789-abcdefgh"
PUBLIC_URL = "https://sms-hooks.example.com"

# every visible control must have a label (ARIA names count)
UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(e => e.closest('[hidden]') === null)
  .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
  .map(e => e.name || e.id)"""


def _missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401, PLC0415 - optional on purpose: the tests skip without it
    except ImportError:
        return "playwright is not installed: pip install -e '.[dev]'"
    if not CHROMIUM.exists():
        return f"no {CHROMIUM}: run .ci/browser-deps (apt-get install chromium)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    reason = _missing()
    if reason:
        if CI:
            pytest.fail(f"{reason} (CI=true: a missing browser is a failure)", pytrace=False)
        pytest.skip(reason)
    from playwright.async_api import async_playwright  # noqa: PLC0415 - optional (see _missing)

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
def registry(redis: aioredis.Redis, names: Names) -> SenderRegistry:
    return SenderRegistry(redis, names)


@pytest.fixture
async def base_url(redis_url: str, namespace: str, redis: aioredis.Redis) -> AsyncIterator[str]:
    """The admin on 127.0.0.1, on a port of its own."""
    settings = Settings(redis_url=redis_url, namespace=namespace, public_url=PUBLIC_URL)
    runner = web.AppRunner(build_app(AdminConfig(token=TOKEN), settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def new_page(browser: Any, base_url: str, *, javascript: bool = True) -> tuple[Any, list[str]]:
    context = await browser.new_context(
        base_url=base_url,
        viewport={"width": 1280, "height": 800},
        http_credentials={"username": "admin", "password": TOKEN, "send": "always"},
        java_script_enabled=javascript,
    )
    if javascript:
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
    page = await context.new_page()
    problems: list[str] = []  # console errors (a CSP violation is one) and uncaught exceptions

    def on_console(message: Any) -> None:
        # a form sent back with its mistakes is a 422 (or 409 for a taken id): expected, not a problem
        expected = re.search(r"Failed to load resource: .* status of (422|409)", message.text)
        if message.type == "error" and not expected:
            problems.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return page, problems


def field(scope: Any, label: str) -> Any:
    """The input labelled exactly `label` (a required field's label ends with a star)."""
    return scope.get_by_label(re.compile(rf"^{re.escape(label)}( \*)?$"))


async def listed(page: Any) -> dict[str, str]:
    """The list page as {sender id: its row's text}."""
    await page.goto("/senders")
    rows = {}
    for row in await page.locator("table.senders tbody tr").all():
        rows[await row.get_attribute("data-sender")] = " ".join((await row.inner_text()).split())
    return rows


async def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    if os.environ.get("SMSFLEET_UPDATE_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / name)


async def test_create_edit_and_delete_senders_in_the_browser(
    browser: Any, base_url: str, registry: SenderRegistry
) -> None:
    from playwright.async_api import expect  # noqa: PLC0415 - optional (see _missing)

    # two senders made elsewhere (the CLI, say): the page lists them too
    await registry.create(parse_sender(sample_sender("smsc", "acme-smsc", verified_caller_ids=["ACME"])))
    await registry.create(parse_sender(sample_sender("sandbox", "demo-sandbox", accounts=["demo"], name="Demo")))
    page, problems = await new_page(browser, base_url)
    assert set(await listed(page)) == {"acme-smsc", "demo-sandbox"}
    assert await page.evaluate(UNLABELLED) == []
    # the ID on the left is the link, then the Name (a sender without one is named after its id)
    headers = await page.locator("table.senders thead th").all_inner_texts()
    assert [h.strip().upper() for h in headers[:3]] == ["ID", "NAME", "GATEWAY"]
    demo = page.locator('tr[data-sender="demo-sandbox"]')
    await expect(demo.locator("th a")).to_have_attribute("href", "/senders/demo-sandbox/edit")
    await expect(demo.locator("td").first).to_have_text("Demo")
    await expect(page.locator('tr[data-sender="acme-smsc"] td').first).to_have_text("acme-smsc")

    # -- create an Infobip sender through the form
    await page.get_by_role("link", name="Create", exact=True).click()
    await expect(page).to_have_url(f"{base_url}/senders/new")
    # the script made the no-JS button go (the URL changes before the deferred script has run: wait for it)
    await expect(page.locator("[data-nojs]")).to_have_count(0)
    await expect(page.locator("#gw-infobip")).to_be_hidden()
    await field(page, "Name").fill("ACME Infobip")
    await page.keyboard.press("Tab")  # keyboard order: Name -> ID -> Delivery service -> Assigned accounts
    assert await page.evaluate("document.activeElement.id") == "f-id"
    await page.keyboard.type("acme-infobip")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "f-gateway"
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "f-accounts"
    await page.keyboard.type("acme, acme-promo")
    await page.get_by_label("Delivery service").select_option(label="Infobip")
    infobip = page.locator("#gw-infobip")
    await expect(infobip).to_be_visible()
    await expect(page.locator("#gw-smsc")).to_be_hidden()
    await expect(page.get_by_label("Keywords")).to_have_value("STOP")  # Infobip pushes: stop words apply
    await infobip.get_by_label("SMS service sending script/URL").fill("https://xyz123.api.infobip.com")
    await infobip.get_by_label("API token").fill("infobip-secret-token")
    await page.get_by_label("Only verified CallerIDs").fill("ACME")
    await page.get_by_label("Keywords").fill("STOP, СТОП")
    await page.get_by_label("Add to global suppress list").check()
    assert await page.evaluate(UNLABELLED) == []
    await page.get_by_role("button", name="Create sender").click()

    # -- saved: the SMS Receiving URL is on the screen, with its copy button
    await expect(page).to_have_url(f"{base_url}/senders/acme-infobip/edit?created=1")
    await expect(page.get_by_role("status").first).to_have_text("Sender created.")
    sender = await registry.get("acme-infobip")
    assert sender is not None
    assert sender.settings.api_token == "infobip-secret-token"  # type: ignore[attr-defined]
    assert sender.stop_words == ["STOP", "СТОП"]
    assert sender.add_to_global_suppress
    url = receiving_url(sender, PUBLIC_URL)
    assert url is not None
    assert url.startswith(f"{PUBLIC_URL}/smslistener/listen_type/sms_infobip?sender=acme-infobip&token=")
    await expect(page.locator("#receiving-url")).to_have_text(url)
    await screenshot(page, "admin-form.png")
    await page.get_by_role("button", name="Copy").click()
    await expect(page.locator("[data-copy]")).to_have_text("Copied")  # for a moment
    await expect(page.locator("[data-copy-status]")).to_have_text("Copied to the clipboard.")
    assert await page.evaluate("navigator.clipboard.readText()") == url
    assert "infobip-secret-token" not in await page.content()
    rows = await listed(page)
    assert set(rows) == {"acme-infobip", "acme-smsc", "demo-sandbox"}
    assert rows["acme-infobip"].startswith("acme-infobip ACME Infobip Infobip acme acme-promo ACME STOP СТОП")

    # -- edit it: the id in the list is the link; a secret left blank is kept
    await page.get_by_role("link", name="acme-infobip", exact=True).click()
    await expect(page).to_have_url(f"{base_url}/senders/acme-infobip/edit")
    token_input = page.locator("#gw-infobip").get_by_label("API token")
    await expect(token_input).to_have_value("")
    await expect(token_input).to_have_attribute("placeholder", "•••••••• (unchanged)")
    await expect(field(page, "ID")).to_have_attribute("readonly", "")  # the id cannot change; the name can
    await field(page, "Name").fill("ACME Infobip (news)")
    await page.get_by_label("Assigned accounts").fill("acme, acme-promo, acme-news")
    await page.locator("#gw-infobip").get_by_label("SMS service sending script/URL").fill("https://abc.api.infobip.com")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page).to_have_url(f"{base_url}/senders/acme-infobip/edit?saved=1")
    await expect(page.get_by_role("status").first).to_contain_text("Changes saved.")
    await expect(page.locator("#receiving-url")).to_have_text(url)  # same sender, same URL
    edited = await registry.get("acme-infobip")
    assert edited is not None
    assert edited.accounts == ["acme", "acme-promo", "acme-news"]
    assert edited.name == "ACME Infobip (news)"
    assert edited.settings.url == "https://abc.api.infobip.com"  # type: ignore[attr-defined]
    assert edited.settings.api_token == "infobip-secret-token"  # type: ignore[attr-defined]
    rows = await listed(page)
    assert "acme-news" in rows["acme-infobip"]
    assert "ACME Infobip (news)" in rows["acme-infobip"]

    # -- create a Play Mobile sender, its ID made from its Name; mistakes are shown next to their fields first
    await page.get_by_role("link", name="Create", exact=True).click()
    await field(page, "Name").fill("acme infobip (NEWS) ")  # taken, in other letters
    await page.get_by_label("Assigned accounts").fill("acme")
    await page.get_by_label("Delivery service").select_option(label="Play Mobile")
    playmobile = page.locator("#gw-playmobile")
    await playmobile.get_by_label("User ID").fill("pm-user")
    # its endpoint override is an advanced setting: in the collapsed "Advanced" section, after the seed's fields
    endpoint = playmobile.get_by_label("Endpoint override")
    await expect(endpoint).to_be_hidden()
    await playmobile.locator("summary", has_text="Advanced").click()
    await expect(endpoint).to_be_visible()
    await page.get_by_role("button", name="Create sender").click()
    await expect(page.locator("#error-summary")).to_be_focused()
    await expect(page.locator("#e-f-playmobile-password")).to_have_text("Error: This field is required.")
    await playmobile.get_by_label("Password").fill("pm-secret")
    await page.get_by_role("button", name="Create sender").click()
    await expect(page.locator("#e-name")).to_have_text(
        "Error: The name 'acme infobip (NEWS)' is taken by sender 'acme-infobip' (case is ignored)."
    )
    await expect(field(page, "Name")).to_have_attribute("aria-invalid", "true")
    await expect(playmobile.get_by_label("User ID")).to_have_value("pm-user")  # what was typed stays
    await field(page, "Name").fill("Play Mobile (UZ)")
    await playmobile.get_by_label("Password").fill("pm-secret")  # secrets are never sent back to the page
    await page.get_by_role("button", name="Create sender").click()
    await expect(page).to_have_url(f"{base_url}/senders/play-mobile-uz/edit?created=1")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Play Mobile (UZ)")
    await expect(page.locator("#receiving-url")).to_contain_text("/smslistener/listen_type/sms_playmobile?sender=")
    rows = await listed(page)
    assert set(rows) == {"acme-infobip", "play-mobile-uz", "acme-smsc", "demo-sandbox"}
    assert rows["play-mobile-uz"].startswith("play-mobile-uz Play Mobile (UZ) Play Mobile acme any STOP")
    await screenshot(page, "admin-list.png")

    # -- delete one from the list, after the confirmation (no: nothing happens)
    delete = page.get_by_role("button", name="Delete acme-infobip")
    page.once("dialog", lambda dialog: dialog.dismiss())
    await delete.click()
    assert await registry.get("acme-infobip") is not None
    messages: list[str] = []

    async def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        await dialog.accept()

    page.once("dialog", accept)
    await delete.click()
    await expect(page).to_have_url(f"{base_url}/senders?deleted=acme-infobip")
    await expect(page.get_by_role("status")).to_have_text("Sender acme-infobip deleted.")
    assert messages == ["Delete sender acme-infobip? Workers stop sending through it at once."]
    assert await registry.get("acme-infobip") is None
    assert set(await listed(page)) == {"play-mobile-uz", "acme-smsc", "demo-sandbox"}
    assert problems == []


async def test_the_page_works_without_javascript(browser: Any, base_url: str, registry: SenderRegistry) -> None:
    from playwright.async_api import expect  # noqa: PLC0415 - optional (see _missing)

    page, problems = await new_page(browser, base_url, javascript=False)
    await page.goto("/senders/new")
    await field(page, "Name").fill("EDNA, no script")
    await field(page, "ID").fill("nojs-edna")
    await page.get_by_label("Assigned accounts").fill("acme")
    await page.get_by_label("Delivery service").select_option(label="MFMS EDNA")
    await expect(page.locator("#gw-edna")).to_be_hidden()  # nothing toggles it without a script...
    await page.get_by_role("button", name="Show its fields").click()  # ...so the page comes again
    edna = page.locator("#gw-edna")
    await expect(edna).to_be_visible()
    await expect(field(page, "Name")).to_have_value("EDNA, no script")
    await expect(field(page, "ID")).to_have_value("nojs-edna")
    await expect(edna.get_by_label("Login field name")).to_have_value("login")  # the kind's default
    assert await page.evaluate(UNLABELLED) == []
    await edna.get_by_label("SMS service URL").fill("https://edna.test/api")
    await field(edna, "Login").fill("acme")
    await field(edna, "Password").fill("edna-secret")
    await page.get_by_label("Assigned accounts").press("Enter")  # Enter saves (not "Show its fields")
    await expect(page).to_have_url(f"{base_url}/senders/nojs-edna/edit?created=1")
    await expect(page.locator("#receiving-url")).to_contain_text("sms_edna?sender=nojs-edna&token=")
    await expect(page.get_by_role("button", name="Copy")).to_be_hidden()
    sender = await registry.get("nojs-edna")
    assert sender is not None
    assert sender.settings.password == "edna-secret"  # type: ignore[attr-defined]
    assert sender.name == "EDNA, no script"

    await page.goto("/senders")
    await page.get_by_role("button", name="Delete nojs-edna").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Delete sender nojs-edna?")
    assert await registry.get("nojs-edna") is not None
    await page.get_by_role("button", name="Delete nojs-edna").click()
    await expect(page.get_by_role("status")).to_have_text("Sender nojs-edna deleted.")
    assert await registry.get("nojs-edna") is None
    assert problems == []


# -- the overview, job lookup, test send and dead letters, with a sandbox fleet running ------------------


@pytest.fixture
async def fleet_url(
    settings: Settings, amqp: aio_pika.abc.AbstractRobustConnection, redis: aioredis.Redis
) -> AsyncIterator[str]:
    """The admin, and the sandbox's send and status workers, in this process."""
    stop = asyncio.Event()
    policy = SendPolicy(concurrency=20)
    workers = asyncio.create_task(run_workers(settings, gateways=["sandbox"], status=True, policy=policy, stop=stop))
    runner = web.AppRunner(build_app(AdminConfig(token=TOKEN), settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()
        stop.set()
        await asyncio.wait_for(workers, 30)


async def publish_jobs(amqp: aio_pika.abc.AbstractConnection, names: Names, sender: str, ids: list[str]) -> None:
    async with amqp.channel(publisher_confirms=True) as channel:
        exchange = await channel.get_exchange(names.send_exchange)
        for job_id in ids:
            body = msgspec.json.encode({"id": job_id, "sender": sender, "account": "acme", "to": "+79161234567",
                                        "text": f"Your code is {job_id[-4:]}"})  # fmt: skip
            await exchange.publish(message(body, message_id=job_id), routing_key=f"sandbox.{sender}")


async def test_overview_job_lookup_test_send_and_dead_letters_in_the_browser(  # noqa: PLR0917 - fixtures
    browser: Any,
    fleet_url: str,
    registry: SenderRegistry,
    redis: aioredis.Redis,
    names: Names,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> None:
    from playwright.async_api import expect  # noqa: PLC0415 - optional (see _missing)

    fast = {"latency_ms": 5, "await_delivery_s": 1}
    await registry.create(parse_sender(sample_sender(
        "sandbox", "acme-sandbox", name="ACME (sandbox)", settings=fast, verified_phones=["+79161234567"],
        rate_limit=20,
    )))  # fmt: skip
    await registry.create(parse_sender(sample_sender(
        "sandbox", "promo-sandbox", name="Promo (sandbox)", settings={**fast, "delivered_rate": 0.6},
    )))  # fmt: skip
    acme = [f"acme-{i:04d}" for i in range(12)]
    promo = [f"promo-{i:04d}" for i in range(10)]
    await publish_jobs(amqp, names, "acme-sandbox", acme)
    await publish_jobs(amqp, names, "promo-sandbox", promo)
    await publish_jobs(amqp, names, "ghost", ["ghost-0001"])  # no such sender (yet): parked in the dead queue
    ledger = Ledger(redis, names)

    async def finished() -> int:
        return sum(r.final for r in await ledger.records(acme + promo))

    deadline = asyncio.get_running_loop().time() + 30
    while await finished() < len(acme + promo):
        assert asyncio.get_running_loop().time() < deadline, "the sandbox jobs did not finish"
        await asyncio.sleep(0.2)
    delivered_promo = sum(r.state == "delivered" for r in await ledger.records(promo))
    await asyncio.sleep(stats.FLUSH_S * 2)  # the workers' counters reach Redis once a second

    # -- the overview: counts per sender, a chart, the gateway's queue, the dead letter, the failures
    page, problems = await new_page(browser, fleet_url)
    await page.goto("/")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Overview")
    row = page.locator('tr[data-sender="acme-sandbox"]')
    await expect(row.locator("td.hour")).to_contain_text("delivered 12")
    await expect(row.locator("td.ratio")).to_contain_text("100.0 %")
    await expect(row.locator("td.rate")).to_contain_text("/ 20")
    assert await row.locator("svg.chart rect.c-ok").count() >= 1
    promo_row = page.locator('tr[data-sender="promo-sandbox"]')
    await expect(promo_row.locator("td.hour")).to_contain_text(f"delivered {delivered_promo}")
    await expect(promo_row.locator("td.hour")).to_contain_text(f"undelivered {10 - delivered_promo}")
    await expect(page.locator('tr[data-gateway="sandbox"] td.depth')).to_have_text("0")
    await expect(page.locator("[data-dead-total]")).to_have_text("1")
    await expect(page.locator('li[data-reason="unknown_sender"]')).to_contain_text("unknown_sender 1")
    await expect(page.locator("section.failures")).to_contain_text("ghost-0001")
    assert await page.evaluate(UNLABELLED) == []
    await screenshot(page, "admin-overview.png")

    # -- look a job up from the search box
    await page.get_by_label("Look up a job").fill("acme-0003")
    await page.get_by_role("button", name="Find").click()
    await expect(page).to_have_url(f"{fleet_url}/jobs/acme-0003")
    await expect(page.locator("[data-job-state]")).to_have_text("delivered")
    await expect(page.locator("[data-job-provider-ids]")).to_contain_text("sbx-")
    history = page.locator("[data-job-history] tr")
    await expect(history).to_have_count(2)
    await expect(history.nth(0)).to_contain_text("accepted")
    await expect(history.nth(1)).to_contain_text("delivered")
    await screenshot(page, "admin-job.png")

    # -- a test send from the sender's page, followed until delivered (the page's script polls the API)
    await page.goto("/senders/acme-sandbox/edit")
    await page.get_by_role("link", name="Test send").click()
    await expect(page).to_have_url(f"{fleet_url}/senders/acme-sandbox/test")
    await expect(page.get_by_label("To")).to_have_value("+79161234567")  # its verified phone
    await page.get_by_label("Text").fill("Hello from the admin")
    await page.get_by_role("button", name="Send test SMS").click()
    await expect(page).to_have_url(re.compile(r"/senders/acme-sandbox/test\?job=test-[0-9a-f]{16}$"))
    await expect(page.locator("[data-job-state]")).to_have_text("delivered", timeout=20_000)
    await expect(page.locator("[data-job-history] tr")).to_have_count(2)
    await expect(page.locator("[data-watch-note]")).to_have_text("Final state reached.")
    job_id = page.url.rsplit("=", 1)[1]
    assert (await ledger.record(job_id)).state == "delivered"

    # -- the dead letter: its sender exists now, so a requeue delivers it, with its original id
    await registry.create(parse_sender(sample_sender("sandbox", "ghost", settings=fast)))
    await page.get_by_role("link", name="Dead letters").click()
    letter = page.locator('tr[data-letter="ghost-0001"]')
    await expect(letter).to_contain_text("unknown_sender")
    await letter.get_by_role("button", name="Requeue").click()
    await expect(page.get_by_role("status")).to_have_text("Requeued 1 message(s).")
    await expect(page.locator("[data-dead-total]")).to_have_text("0")
    deadline = asyncio.get_running_loop().time() + 20
    while (await ledger.record("ghost-0001")).state != "delivered":
        assert asyncio.get_running_loop().time() < deadline, "the requeued job was not delivered"
        await asyncio.sleep(0.2)
    assert problems == []
