"""The memory viewer (/ui) in a real browser: Playwright drives Debian's chromium (nothing is
downloaded) against the running service. Sign-in, a refused key, browsing to a memory's source
messages, a filtered search, a memory appearing in the live feed, activating an index generation
and rolling it back. The screenshots the README shows are taken here (docs/screenshots/)."""

import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"
WIDE = {"width": 1280, "height": 860}
NARROW = {"width": 390, "height": 844}


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is not installed: `make browser` installs it")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=WIDE, timezone_id="UTC", locale="en-GB")
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


@pytest.fixture(scope="module")
def api_key(running) -> str:
    """The admin key the service was started with."""
    return running.admin_key


def _msg(mid, name, text, day):
    role = "user" if name == "Alice" else "assistant"
    return {"role": role, "name": name, "message_id": mid, "content": text,
            "timestamp": f"2023-05-{day:02d}T10:{int(mid[-1]):02d}:00Z"}  # fmt: skip


@pytest.fixture(scope="module")
def seeded(running) -> str:
    """A user with two sessions, every message a memory."""
    user = f"viewer-{uuid.uuid4().hex[:6]}"
    sessions = {
        "trip": [
            _msg("t1", "Alice", "I adopted a golden retriever named Max.", 20),
            _msg("t2", "Bob", "Max sounds lovely, how old is he?", 20),
            _msg("t3", "Alice", "He is two years old and loves swimming at the beach.", 20),
        ],
        "work": [
            _msg("w1", "Alice", "My new job at the observatory starts in June.", 22),
            _msg("w2", "Bob", "Congratulations on the observatory job, Alice!", 22),
        ],
    }
    with running.client() as c:
        for session, messages in sessions.items():
            r = c.post("/v1/memories", json={"user_id": user, "session_id": session,
                                             "messages": messages, "wait": True})  # fmt: skip
            assert r.status_code == 200, r.text
    return user


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _login(page, running, key: str, hash_: str = "") -> None:
    from playwright.sync_api import expect

    page.goto(f"{running.url}/ui/{hash_}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Sections")).to_be_visible()


def test_sign_in_and_a_refused_key(running, page, api_key, seeded):
    from playwright.sync_api import expect

    page.goto(f"{running.url}/ui")  # redirected to /ui/
    key_input = page.get_by_label("API key")
    expect(key_input).to_have_attribute("type", "password")
    _shot(page, "login")
    key_input.fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That API key was not accepted.")
    assert page.evaluate("sessionStorage.getItem('memserve.apiKey')") is None

    key_input.fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name=seeded)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('memserve.apiKey')") == api_key
    # Signing out forgets the key.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('memserve.apiKey')") is None


def test_browse_to_a_memorys_source_messages(running, page, api_key, seeded):
    from playwright.sync_api import expect

    _login(page, running, api_key, f"#/browse/{seeded}")
    page.get_by_role("link", name="trip", exact=True).click()
    sessions = page.get_by_role("table", name="Sessions of the selected user")
    row = sessions.get_by_role("row").filter(has_text="trip")
    # received, processed, pending, failed, memories
    expect(row.get_by_role("cell").nth(1)).to_have_text("3")
    expect(row.get_by_role("cell").nth(2)).to_have_text("3")
    expect(page.locator("#messages li")).to_have_count(3)
    _shot(page, "browse")

    page.locator("#memories").get_by_role("link", name="golden retriever").click()
    detail = page.locator("#memory-detail")
    expect(detail).to_contain_text("Source messages")
    expect(detail.get_by_role("link", name="Alice: I adopted a golden retriever")).to_be_visible()
    _shot(page, "memory")

    page.get_by_role("link", name="Show the source messages in their conversation").click()
    source = page.locator("#messages li.source")
    expect(source).to_have_count(1)
    expect(source).to_contain_text("I adopted a golden retriever named Max.")
    expect(page.locator("#messages li")).to_have_count(3)  # shown within the conversation


def test_search_with_filters_shows_each_rankings_scores(running, page, api_key, seeded):
    from playwright.sync_api import expect

    _login(page, running, api_key, "#/search")
    view = page.locator("#view-search")
    view.get_by_role("searchbox", name="Query").fill("What about the observatory job?")
    view.get_by_label("User", exact=True).fill(seeded)
    view.get_by_label("Strategy", exact=True).select_option("hybrid")
    view.get_by_label("Session", exact=True).fill("work")
    view.get_by_label("Speaker", exact=True).fill("Bob")
    view.get_by_label("From", exact=True).fill("2023-05-21T00:00")
    view.get_by_label("To", exact=True).fill("2023-05-23T00:00")
    view.get_by_label("Limit", exact=True).fill("5")
    view.get_by_label("Expand links", exact=True).check()
    view.get_by_role("button", name="Search").click()
    expect(page.locator("#search-took")).to_contain_text("ms (took_ms)")
    results = page.locator("#results > li")
    expect(results).to_have_count(1)  # Bob said one thing in that session
    expect(results.first).to_contain_text("Congratulations on the observatory job")
    scores = results.first.locator(".scores")
    for label in ("fused", "vector", "BM25"):
        expect(scores).to_contain_text(label)
    assert "—" not in scores.locator("b").all_inner_texts()  # found by both rankings
    _shot(page, "search")

    # The time range alone leaves the other session out.
    view.get_by_label("Speaker", exact=True).fill("")
    view.get_by_label("Session", exact=True).fill("")
    view.get_by_label("From", exact=True).fill("2023-05-19T00:00")
    view.get_by_label("To", exact=True).fill("2023-05-20T23:59")
    view.get_by_role("button", name="Search").click()
    expect(results).to_have_count(3)
    for text in results.all_inner_texts():
        assert "session trip" in text, text


def test_a_new_memory_appears_in_the_live_feed(running, page, api_key, seeded):
    from playwright.sync_api import expect

    _login(page, running, api_key, "#/live")
    feed = page.locator("#feed > li")
    expect(feed.first).to_be_visible()
    page.get_by_label("User (empty: everyone)").fill(seeded)
    page.get_by_label("User (empty: everyone)").press("Enter")
    text = f"Live note {uuid.uuid4().hex[:6]}: Max learned to fetch a frisbee."
    expect(page.locator("#feed")).not_to_contain_text(text)
    with running.client() as c:
        r = c.post("/v1/memories", json={
            "user_id": seeded, "session_id": "live",
            "messages": [_msg("l1", "Alice", text, 25)], "wait": True})  # fmt: skip
        assert r.status_code == 200, r.text
    t0 = time.monotonic()
    expect(feed.filter(has_text=text)).to_have_count(1, timeout=15_000)
    assert time.monotonic() - t0 < 15
    expect(feed.first).to_contain_text(text)  # newest first
    _shot(page, "live")


def test_activate_a_generation_and_roll_it_back(running, page, api_key, seeded, tmp_path):
    from playwright.sync_api import expect

    from tests.fixtures.random_models import build_random_sentence_transformer

    # A complete generation of another model, as a finished rebuild leaves it. Serve's handles
    # block, which they refuse to do on the thread where Playwright runs its event loop.
    def complete_generation() -> int:
        from deployments.apps import memory_index_handle

        index = memory_index_handle()
        n = index.create_generation.remote(str(model)).result()["generation"]
        deadline = time.monotonic() + 60
        while index.generation_missing.remote(n).result():
            index.sweep_generation.remote(n).result()
            assert time.monotonic() < deadline
        return n

    model = build_random_sentence_transformer(tmp_path, dim=64)
    with ThreadPoolExecutor(1) as pool:
        n = pool.submit(complete_generation).result()

    _login(page, running, api_key, "#/jobs")
    gens = page.get_by_role("table", name="Index generations")
    expect(gens.get_by_role("row").filter(has_text=str(model))).to_contain_text("building")
    page.get_by_role("button", name=f"Activate generation {n}").click()
    expect(page.locator("#gen-result")).to_have_text(
        f"Activating generation {n}: generation {n} is active."
    )
    expect(gens.get_by_role("row").filter(has_text=str(model))).to_contain_text("active")
    with running.client() as c:
        assert c.get("/readyz").json()["checks"]["memory_index"]["index_generation"] == n
    _shot(page, "jobs")

    page.get_by_role("button", name="Roll back to the previous generation").click()
    result = page.locator("#gen-result")
    expect(result).to_contain_text("Rollback: generation")
    active = int(result.inner_text().split("generation ")[1].split()[0])
    assert active != n
    expect(gens.get_by_role("row").filter(has_text=str(model))).to_contain_text("previous")
    jobs = page.locator("#jobs > li")
    expect(jobs.first).to_contain_text("rollback")
    expect(jobs.first).to_contain_text("succeeded")
    with running.client() as c:
        assert c.get("/readyz").json()["checks"]["memory_index"]["index_generation"] == active


def test_charts_and_a_narrow_screen(running, page, api_key, seeded):
    from playwright.sync_api import expect

    _login(page, running, api_key, "#/charts")
    page.locator("#view-charts").get_by_label("User", exact=True).fill(seeded)
    page.get_by_role("button", name="Draw").click()
    tokens = page.get_by_role("img", name=f"Tokens per session of {seeded}")
    expect(tokens).to_be_visible()
    assert tokens.locator("rect").count() >= 2 * 4  # two sessions, four series
    expect(page.get_by_role("img", name=f"Memories of {seeded} over time")).to_be_visible()
    _shot(page, "charts")

    page.set_viewport_size(NARROW)
    page.goto(f"{running.url}/ui/#/browse/{seeded}/trip")
    expect(page.locator("#messages li")).to_have_count(3)
    # One column: the users pane sits above the sessions, nothing scrolls sideways.
    users = page.locator(".browse > .pane").first.bounding_box()
    sessions = page.locator(".browse > .pane").nth(1).bounding_box()
    assert sessions["y"] > users["y"] + users["height"] - 1
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
    # Keyboard only: Tab reaches the section links, Enter follows one.
    page.keyboard.press("Tab")
    for _ in range(10):
        if page.evaluate("document.activeElement.textContent") == "Search":
            break
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("searchbox", name="Query")).to_be_visible()
    _shot(page, "narrow")
