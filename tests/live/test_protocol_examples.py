"""The worked examples in docs/websocket-protocol.md, run as written: the Python
one as a program against a web process restarted under it, the JavaScript
one in a page in headless Chromium."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, ON_CI
from tests.support.events import photo_event, signups
from tests.support.kafka import produce_events as produce
from tests.support.project import ROOT
from tests.support.stack import Processes, make_token

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DOC = ROOT / "docs" / "websocket-protocol.md"


def example(language: str) -> str:
    """The ``language`` code block of the protocol reference's Examples section."""
    examples = DOC.read_text().split("## Examples", 1)[-1]
    match = re.search(rf"```{language}\n(.*?)```", examples, re.S)
    assert match, f"no {language} example in {DOC}"
    return match.group(1)


def produce_aside(events: list[dict]) -> None:
    """``produce`` on a thread of its own: Playwright's sync API keeps an event
    loop running on this one."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, produce(events)).result()


def captions(first: int, count: int) -> list[dict]:
    return [photo_event(n, caption=f"example {n}") for n in range(first, first + count)]


def test_the_python_example_follows_and_resumes(processes: Processes, tmp_path: Path) -> None:
    token = make_token("python-example")
    processes.start("web")
    older, during, after = captions(8000, 25), captions(8100, 5), captions(8200, 5)
    asyncio.run(produce([*older, *signups(8300, 3)]))
    script = tmp_path / "follow.py"
    script.write_text(example("python"))
    env = {
        **processes.env,
        "EVENTSITE_WS": processes.base_url.replace("http", "ws") + "/ws/events/",
        "EVENTSITE_TOKEN": token,
    }
    out = tmp_path / "follow.out"
    with open(out, "wb") as sink:
        program = subprocess.Popen([sys.executable, str(script)], env=env, stdout=sink)
    processes.running["example"] = program

    def printed() -> list[str]:
        return [line for line in out.read_text().splitlines() if line[0].isdigit()]

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 60
        while len(printed()) < count:
            assert program.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)

    wait_for(20)  # the history
    processes.running["web"].terminate()
    processes.running["web"].wait(10)
    asyncio.run(produce(during))
    processes.start("web")
    asyncio.run(produce(after))
    wait_for(30)
    time.sleep(0.5)  # anything printed twice would show by now
    lines = [line.split(" ", 2) for line in out.read_text().splitlines() if line[0].isdigit()]
    history, rest = [caption for _, _, caption in lines[:20]], lines[20:]
    assert history == [e["data"]["caption"] for e in older[-20:]]
    # Then each later event once, in order within its partition.
    assert sorted(caption for _, _, caption in rest) == sorted(
        e["data"]["caption"] for e in [*during, *after]
    )
    for partition in {p for p, _, _ in rest}:
        offsets = [int(o) for p, o, _ in rest if p == partition]
        assert offsets == sorted(offsets)


@pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not ON_CI, reason=f"Chromium not installed at {CHROMIUM}"
)
def test_the_javascript_example_follows_in_a_page(processes: Processes, browser) -> None:
    token = make_token("javascript-example")
    processes.start("web")
    older, newer = captions(9000, 22), captions(9100, 4)
    produce_aside(older)
    # The example stands in for a script of the page's own: the site's policy
    # (scripts from the site's files only) would refuse it as injected text.
    context = browser.new_context(base_url=processes.base_url, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto("/accounts/login/")  # any page of the site: the example uses location
    # The example as written, but collecting what it would log.
    code, replaced = re.subn(
        r"^follow\(\"es_…\", .*$",
        "follow(TOKEN, (item) => window.got.push(item.event.data.caption));",
        example("javascript"),
        flags=re.M,
    )
    assert replaced == 1
    page.evaluate(
        "([code, token]) => { window.got = []; new Function('TOKEN', code)(token); }",
        [code, token],
    )
    page.wait_for_function("window.got.length >= 20", timeout=15_000)
    produce_aside(newer)
    page.wait_for_function("window.got.length >= 24", timeout=15_000)
    time.sleep(0.5)
    got = page.evaluate("window.got")
    context.close()
    assert got[:20] == [e["data"]["caption"] for e in older[-20:]]
    assert sorted(got[20:]) == sorted(e["data"]["caption"] for e in newer)  # each once
    assert errors == []
