"""The DarkLyrics scraper against a hostile server on 127.0.0.1: redirects, huge, slow and malformed
answers. Each bad page costs the user that page and one warning line, never a hang or a traceback,
and the crawl goes on.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the fixture module beside this file

from fixtures_darklyrics import FixtureServer, expected_songs  # noqa: E402
from test_scrape import run, songs  # noqa: E402

from atomlib.data import fetcher  # noqa: E402
from atomlib.errors import AtomError  # noqa: E402

PAGE = "/lyrics/1349/hellfire.html"  # the page the server answers badly
ARTISTS = ["amonamarth", "1349"]


@pytest.fixture
def site():
    with FixtureServer() as server:
        yield server


def crawl_with_one_bad_page(site, tmp_path, capsys, **kw) -> tuple[dict, list[str]]:
    """Crawl ARTISTS without retries; every other page is fine. Returns the summary and stderr's lines."""
    summary = run(site, tmp_path, artists=ARTISTS, retries=0, **kw)
    assert songs(tmp_path) == expected_songs(site.base_url, ["amonamarth"])  # the crawl went on
    return summary, capsys.readouterr().err.splitlines()


def assert_one_line(lines: list[str], reason: str):
    assert len(lines) == 1 and lines[0].startswith("warning: ") and PAGE in lines[0] and reason in lines[0], lines


# --- redirects ----------------------------------------------------------------------------------


def test_redirect_to_another_host_is_not_followed(site, tmp_path, capsys):
    with FixtureServer() as other:  # "another host": another port on 127.0.0.1
        site.fail(PAGE, (302, {"Location": other.base_url + PAGE}))
        summary, lines = crawl_with_one_bad_page(site, tmp_path, capsys)
        assert other.requests == []
    assert summary["failed"] == 1
    assert_one_line(lines, f"redirects off the site, to {other.base_url}{PAGE}")


def test_redirect_to_a_page_robots_txt_disallows_is_not_followed(site, tmp_path, capsys):
    site.fail(PAGE, (301, {"Location": "/cgi-bin/trap.html"}))
    summary, lines = crawl_with_one_bad_page(site, tmp_path, capsys)
    assert "/cgi-bin/trap.html" not in site.paths() and summary["failed"] == 1
    assert_one_line(lines, "which robots.txt disallows")


@pytest.mark.parametrize("location, reason", [
    (None, "a redirect without a Location"),
    ("http://[oops/x.html", "a malformed answer (ValueError)"),
    ("https://{host}{path}", "redirects off the site"),  # same host and port, another scheme
    ("{path}", "more than 5 redirects"),  # a loop
])
def test_bad_redirects_fail_the_page_in_one_line(site, tmp_path, capsys, location, reason):
    host = site.base_url.removeprefix("http://")
    headers = {} if location is None else {"Location": location.format(host=host, path=PAGE)}
    site.fail(PAGE, *[(302, headers)] * 10)
    summary, lines = crawl_with_one_bad_page(site, tmp_path, capsys)
    assert summary["failed"] == 1 and site.paths().count(PAGE) <= fetcher.Fetcher.MAX_REDIRECTS + 1
    assert_one_line(lines, reason)


def test_redirect_within_the_site_is_followed_and_cached_under_the_asked_url(site, tmp_path):
    site.pages["/lyrics/1349/moved.html"] = site.pages[PAGE]
    site.fail(PAGE, (301, {"Location": "moved.html"}))
    run(site, tmp_path, artists=["1349"])
    assert site.paths()[-2:] == [PAGE, "/lyrics/1349/moved.html"]
    assert songs(tmp_path) == expected_songs(site.base_url, ["1349"])  # the song keeps the URL the crawl asked for
    (tmp_path / "out" / "songs.jsonl").unlink()
    n = len(site.paths())
    run(site, tmp_path, artists=["1349"])
    assert site.paths()[n:] == ["/robots.txt"]


def test_robots_txt_redirected_off_the_site_ends_the_run_in_one_line(site, tmp_path):
    with FixtureServer() as other:
        site.fail("/robots.txt", (302, {"Location": other.base_url + "/robots.txt"}))
        with pytest.raises(AtomError, match="--base-url") as err:
            run(site, tmp_path, artists=ARTISTS)
        assert other.requests == [] and "\n" not in str(err.value)
    assert site.paths() == ["/robots.txt"]


# --- huge, slow and malformed answers ---------------------------------------------------------


@pytest.mark.parametrize("answer, reason", [
    ((200, {}, b"<p>" + b"x" * 300_000), "over the 100,000-byte limit"),  # says so in Content-Length
    (("raw", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n" + b"x" * 300_000),
     "over the 100,000-byte limit"),  # no Content-Length: counted while reading
    (("raw", b"this is not HTTP at all\r\n\r\n"), "a malformed answer"),
    (("raw", b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n<h3>cut short"), "a malformed answer"),
    ((200, {}, b"<div>" * 5000 + b"<h3>1. Deep</h3>deep<br>"), "could not parse"),  # nesting too deep to walk
    ((200, {}, bytes(range(256)) * 40), "could not parse"),  # binary junk
])
def test_hostile_answers_cost_one_page_and_one_line(site, tmp_path, capsys, monkeypatch, answer, reason):
    monkeypatch.setattr(fetcher.Fetcher, "MAX_PAGE_BYTES", 100_000)  # the fixture's pages are ~3 kB
    site.fail(PAGE, answer)
    summary, lines = crawl_with_one_bad_page(site, tmp_path, capsys)
    assert summary["failed"] + summary["skipped"] == 1
    assert_one_line(lines, reason)


def test_a_server_trickling_its_headers_is_given_up_on_after_the_timeout(site, tmp_path, capsys):
    site.fail(PAGE, ("trickle_head", 0.05, 200))  # each byte quick, the headers alone would take ~90 s
    start = time.monotonic()
    summary, lines = crawl_with_one_bad_page(site, tmp_path, capsys, timeout=0.5)
    assert time.monotonic() - start < 3 and summary["failed"] == 1
    assert_one_line(lines, "timed out after 0.5 s")


def test_a_trickling_server_is_given_up_on_after_the_timeout(site, tmp_path, capsys):
    site.fail(PAGE, ("trickle", 0.05, 200))  # a byte every 50 ms: every read is quick, the page takes 10 s
    start = time.monotonic()
    summary, lines = crawl_with_one_bad_page(site, tmp_path, capsys, timeout=0.5)
    assert time.monotonic() - start < 3 and summary["failed"] == 1
    assert_one_line(lines, "timed out after 0.5 s")
