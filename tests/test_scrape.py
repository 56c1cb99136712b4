"""The DarkLyrics scraper against a fake site on 127.0.0.1: parsing, politeness, resuming.

Every crawl here runs with delay 0 and tiny backoffs; where a test needs to know how long the
scraper *would* wait, it swaps the module's clock for one that records sleeps instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the fixture module beside this file

from fixtures_darklyrics import SITE, FixtureServer, album_page, artist_page, build_site, expected_songs  # noqa: E402

from atomlib.data import fetcher, setup as data_setup  # noqa: E402
from atomlib.cli import main  # noqa: E402
from atomlib.errors import AtomError  # noqa: E402
from atomlib.paths import data_dir, free_port  # noqa: E402
from atomlib.data.darklyrics import (  # noqa: E402
    ParseError, parse_album_header, parse_album_page, parse_artist_page, parse_letter_index,
)
from atomlib.data.fetcher import USER_AGENT  # noqa: E402
from atomlib.data.scrape import scrape_darklyrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTISTS = ["amonamarth", "motleycrue", "dimmuborgir", "1349"]
BASE = "http://www.darklyrics.com"


@pytest.fixture
def site():
    with FixtureServer() as server:
        yield server


def run(server, tmp_path, artists=ARTISTS, letters=(), **kw):
    kw = {"delay": 0, "progress": False, "backoff": 0.01, **kw}
    return scrape_darklyrics(artists=artists, letters=letters, base_url=server.base_url,
                             out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", **kw)


def songs(tmp_path) -> list[dict]:
    path = tmp_path / "out" / "songs.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def album(slug, album_slug):
    artist = next(a for a in SITE if a["slug"] == slug)
    return artist, next(al for al in artist["albums"] if al["slug"] == album_slug)


class RecordingClock:
    """Stands in for the `time` module inside atomlib.data.fetcher: real clocks, recorded sleeps."""

    def __init__(self):
        self.sleeps: list[float] = []
        self.monotonic, self.time = time.monotonic, time.time

    def sleep(self, seconds):
        self.sleeps.append(seconds)


# --- parsing ----------------------------------------------------------------------------------


def test_same_site_means_scheme_host_and_port():
    assert fetcher.same_site("http://www.darklyrics.com/a/x.html", BASE)
    assert fetcher.same_site("http://www.darklyrics.com:80/a.html", BASE)  # the default port is the same port
    assert not fetcher.same_site("https://www.darklyrics.com/a.html", BASE)
    assert not fetcher.same_site("http://evil.example/a.html", BASE)
    assert not fetcher.same_site("http://www.darklyrics.com:8080/a.html", BASE)
    assert not fetcher.same_site("http://www.darklyrics.com:99999/a.html", BASE)  # a malformed port is not the site


@pytest.mark.parametrize("header, expected", [
    ('album: "Twilight Of The Thunder God" (2008)', ("Twilight Of The Thunder God", 2008)),
    ('album: "Sorrow Throughout The Nine Worlds"', ("Sorrow Throughout The Nine Worlds", None)),  # no year
    ("album: Once Sent From The Golden Hall (1998)", ("Once Sent From The Golden Hall", 1998)),  # no quotes
    ("album: Demo Tape", ("Demo Tape", None)),  # neither
    ('album: "Too Fast For Love (Remastered)" (1981)', ("Too Fast For Love (Remastered)", 1981)),
    ('album: "Live (1999)"', ("Live (1999)", None)),  # a year-like part of the title is not the year
    ("album: Live In Oslo (Bonus) (2005)", ("Live In Oslo (Bonus)", 2005)),
    ('EP: "Stormblåst" (1996)', ("Stormblåst", 1996)),
    ("album:  \u201cCurly Quotes\u201d  ( 2010 )", ("Curly Quotes", 2010)),
    ("other songs:", ("other songs", None)),
])
def test_parse_album_header(header, expected):
    assert parse_album_header(header) == expected


def test_parse_letter_index_keeps_artist_links_only():
    pages = build_site()
    artists = parse_letter_index(pages["/a.html"][0].decode(), f"{BASE}/a.html")
    assert [a["slug"] for a in artists] == ["amonamarth", "arcturus"]  # not the A-Z bar, not about.html
    assert artists[0] == {"slug": "amonamarth", "name": "AMON AMARTH", "letter": "a", "url": f"{BASE}/a/amonamarth.html"}
    digits = parse_letter_index(pages["/19.html"][0].decode(), f"{BASE}/19.html")
    assert digits[0]["url"] == f"{BASE}/19/1349.html" and digits[0]["letter"] == "19"
    # absolute links, <a> attributes in any order, a link twice, links to another site
    html = ('<a class="x" href="/m/motleycrue.html">MÖTLEY CRÜE</a><a href="m/motleycrue.html">again</a>'
            '<a href="http://elsewhere.example/m/mayhem.html">MAYHEM</a><a href="lyrics/m/x.html">not an artist</a>')
    assert [(a["slug"], a["name"]) for a in parse_letter_index(html, f"{BASE}/m.html")] == [("motleycrue", "MÖTLEY CRÜE")]
    with pytest.raises(ParseError):
        parse_letter_index("<html><a href='b.html'>B</a></html>", f"{BASE}/a.html")


def test_parse_artist_page_real_markup():
    artist, _ = album("amonamarth", "twilightofthethundergod")
    page = parse_artist_page(artist_page(artist), f"{BASE}/a/amonamarth.html")
    assert page["artist"] == "AMON AMARTH"
    got = [(a["title"], a["year"], a["url"], len(a["tracks"])) for a in page["albums"]]
    assert got == [
        ("Twilight Of The Thunder God", 2008, f"{BASE}/lyrics/amonamarth/twilightofthethundergod.html", 3),
        ("Sorrow Throughout The Nine Worlds", None, f"{BASE}/lyrics/amonamarth/sorrowthroughoutheninewords.html", 1),
        ("Once Sent From The Golden Hall", 1998, f"{BASE}/lyrics/amonamarth/oncesentfromthegoldenhall.html", 2),
    ]
    assert page["albums"][0]["tracks"][1] == (2, "Guardians & Giants")  # entity decoded


def test_parse_artist_page_tolerates_variations():
    # no div.album wrappers, <br> without slash, entities in the header, odd whitespace, a non-album h2 first
    html = """<html><body><h2>Latest news</h2><h1>
      DIMMU   BORGIR LYRICS </h1>
    <h2>album:<strong>&quot;Puritanical Euphoric Misanthropia&quot;</strong>(2001)</h2>
    <a href='../lyrics/dimmuborgir/puritanicaleuphoricmisanthropia.html#1'>Fear And Wonder</a><br>
    <a href='../lyrics/dimmuborgir/puritanicaleuphoricmisanthropia.html#2'>Blessings</a><br>
    <h2>album: "Death Cult Armageddon" (2003)</h2>
    <div><div><a href="/lyrics/dimmuborgir/deathcultarmageddon.html#1">Allegiance</a></div></div>
    <a href="../d.html">back</a></body></html>"""
    page = parse_artist_page(html, f"{BASE}/d/dimmuborgir.html")
    assert page["artist"] == "DIMMU BORGIR"
    assert [(a["title"], a["year"], [t for t, _ in a["tracks"]]) for a in page["albums"]] == [
        ("Puritanical Euphoric Misanthropia", 2001, [1, 2]), ("Death Cult Armageddon", 2003, [1])]
    with pytest.raises(ParseError):
        parse_artist_page("<h1>NOBODY LYRICS</h1><p>nothing here</p>", f"{BASE}/n/nobody.html")


@pytest.mark.parametrize("slug, album_slug", [(a["slug"], al["slug"]) for a in SITE for al in a["albums"]
                                              if not al.get("unparsable") and not al.get("missing")])
def test_parse_album_page_matches_fixture(slug, album_slug):
    artist, al = album(slug, album_slug)
    url = f"{BASE}/lyrics/{slug}/{album_slug}.html"
    page = parse_album_page(album_page(artist, al), url)
    want = [s for s in expected_songs(BASE, [slug]) if s["url"].startswith(url + "#")] or [
        {"track": n, "title": t, "lyrics": ly, "url": f"{url}#{n}"} for n, (t, ly, _) in enumerate(al["songs"], 1)]
    assert [(s["track"], s["title"], s["lyrics"], s["url"]) for s in page["songs"]] == \
        [(s["track"], s["title"], s["lyrics"], s["url"]) for s in want]
    assert page["artist"] == artist["name"] and (page["album"], page["year"]) == (al["title"], al["year"])


def test_parse_album_page_edge_cases():
    html = """<html><body><h1><a href="../../x/x.html">X LYRICS</a></h1>
    <div class="albumlyrics"><h2>album: <strong>"A &amp; B"</strong> (2001)</h2><a href="#1">1. One</a><br></div>
    <div class="lyrics">
    <h3><a id="1">1. Rock &amp; Roll &#39;Til &quot;Death&quot;</a></h3><br>
    <br>
      first   line <i>(x2)</i><br />
    <i>[Solo: Someone]</i><br/>


    <br><br><br>
    after <b>bold</b> gap<br><script>document.write("ad<br>ad")</script>
    <br><br>
    <h3 id="2">2. Silence</h3>
    <h3><a name="3">3. [Instrumental]</a></h3><br /><i>[Instrumental]</i><br />
    <h3><a name="4">4. Last</a></h3><br />final line<br /><br />
    Thanks to someone for sending these lyrics.<br />
    <div class="thanks">Thanks to a friend for sending track #1 lyrics.</div>
    <div class="note">Submits, comments, corrections are welcomed</div>
    </div></body></html>"""
    page = parse_album_page(html, "http://h/lyrics/x/ab.html")
    assert (page["artist"], page["album"], page["year"]) == ("X", "A & B", 2001)
    assert [(s["track"], s["title"], s["lyrics"]) for s in page["songs"]] == [
        (1, "Rock & Roll 'Til \"Death\"", "first line (x2)\n[Solo: Someone]\n\nafter bold gap"),
        (2, "Silence", ""),
        (3, "[Instrumental]", "[Instrumental]"),
        (4, "Last", "final line"),
    ]
    assert page["songs"][1]["url"] == "http://h/lyrics/x/ab.html#2"
    with pytest.raises(ParseError):
        parse_album_page('<div class="lyrics">Lyrics are being updated.</div>', "http://h/lyrics/x/y.html")


def test_parse_album_page_without_lyrics_div_keeps_footers_and_ads_out():
    html = """<html><body><div class="cont"><div class="text">
    <div class="t"><h3><a name="1">1. One</a></h3></div>
    l1<br>l2<br><div class="ad">BUY NOW</div>
    <div class="song"><h3><a name="2">2. Two</a></h3><br>t1<br></div>
    </div><div class="footer">DarkLyrics.com</div></div></body></html>"""
    page = parse_album_page(html, "http://h/lyrics/a/b.html")
    assert [(s["title"], s["lyrics"]) for s in page["songs"]] == [("One", "l1\nl2"), ("Two", "t1")]
    assert page["artist"] is None and page["album"] is None
    # "lyrics" divs that hold only the text, the headings outside them
    html = '<h3><a name="1">1. X</a></h3><div class="lyrics">a<br>b</div><h3>2. Y</h3><div class="lyrics">c</div>'
    assert [(s["track"], s["lyrics"]) for s in parse_album_page(html, "http://h/l.html")["songs"]] == [(1, "a\nb"), (2, "c")]


# --- the crawl ----------------------------------------------------------------------------------


def test_crawl_artist_mode_writes_every_song_politely(site, tmp_path, capsys):
    summary = run(site, tmp_path)
    assert songs(tmp_path) == expected_songs(site.base_url, ARTISTS)
    assert {k: summary[k] for k in ("artists", "albums", "songs", "skipped", "failed")} == \
        {"artists": 4, "albums": 6, "songs": 12, "skipped": 1, "failed": 0}
    paths = site.paths()
    assert paths[0] == "/robots.txt"
    assert "/19/1349.html" in paths  # digit slug lives under /19/
    assert "/lyrics/dimmuborgir/stormblast.html" not in paths  # disallowed: never requested
    assert "robots.txt disallows" in capsys.readouterr().err
    assert all(ua == USER_AGENT for _, ua in site.requests) and "ATOM-GPT" in USER_AGENT and "https://" in USER_AGENT
    assert len(paths) == len(set(paths)) == summary["requests"]  # no page fetched twice
    # every fetched page is in the cache under a readable, bounded name, and no temp file is left behind
    cached = {p.name for p in (tmp_path / "cache").rglob("*")}
    assert any(n.startswith("lyrics-amonamarth-twilightofthethundergod-") for n in cached)
    assert not any(n.startswith(".tmp-") for n in cached) and max(map(len, cached)) <= 80 + 1 + 16 + 5


def test_crawl_letter_mode_counts_skipped_and_failed(site, tmp_path, capsys):
    summary = run(site, tmp_path, artists=(), letters=["a", "19"])
    assert songs(tmp_path) == expected_songs(site.base_url, ["amonamarth", "arcturus", "1349"])
    assert (summary["artists"], summary["skipped"], summary["failed"]) == (3, 1, 1)  # unparsable page, dead link
    err = capsys.readouterr().err
    assert "could not parse" in err and "broken.html" in err and "HTTP 404" in err
    assert site.paths()[:2] == ["/robots.txt", "/a.html"]


def test_429_with_retry_after_then_success(site, tmp_path, monkeypatch):
    clock = RecordingClock()
    monkeypatch.setattr(fetcher, "time", clock)
    page = "/lyrics/1349/hellfire.html"
    site.fail("/robots.txt", (429, {"Retry-After": "2"}))
    site.fail(page, (429, {"Retry-After": "7"}))
    run(site, tmp_path, artists=["1349"], backoff=0.01)
    assert songs(tmp_path) == expected_songs(site.base_url, ["1349"])
    assert site.paths().count("/robots.txt") == 2 and site.paths().count(page) == 2
    assert clock.sleeps == [2.0, 7.0]  # Retry-After, not the 0.01 s backoff


def test_503_retries_with_exponential_backoff_then_gives_up(site, tmp_path, monkeypatch):
    clock = RecordingClock()
    monkeypatch.setattr(fetcher, "time", clock)
    site.fail("/lyrics/1349/hellfire.html", (503, {}), (502, {}))
    run(site, tmp_path, artists=["1349"], backoff=0.5)
    assert clock.sleeps == [0.5, 1.0] and len(songs(tmp_path)) == 1
    # a page that keeps failing is counted and the crawl goes on
    site.fail("/lyrics/dimmuborgir/puritanicaleuphoricmisanthropia.html", *[(500, {})] * 3)
    summary = run(site, tmp_path, artists=["dimmuborgir", "1349"], retries=2)
    assert summary["failed"] == 1 and site.paths().count("/lyrics/dimmuborgir/puritanicaleuphoricmisanthropia.html") == 3


def test_timeout_is_retried(site, tmp_path):
    site.fail("/19/1349.html", ("slow", 1.5))
    run(site, tmp_path, artists=["1349"], timeout=0.3)
    assert site.paths().count("/19/1349.html") == 2 and len(songs(tmp_path)) == 1


def test_waits_delay_seconds_between_requests(site, tmp_path, monkeypatch):
    clock = RecordingClock()
    monkeypatch.setattr(fetcher, "time", clock)
    summary = run(site, tmp_path, artists=["amonamarth"], delay=3.0)
    assert summary["requests"] == 5  # robots, artist page, 3 albums
    assert len(clock.sleeps) == 4 and all(2.0 < s <= 3.0 for s in clock.sleeps)


def test_robots_txt_forbidden_means_nothing_is_fetched(site, tmp_path, capsys):
    site.fail("/robots.txt", (403, {}))
    summary = run(site, tmp_path, artists=["1349"])
    assert site.paths() == ["/robots.txt"] and summary["skipped"] == 1 and songs(tmp_path) == []


def test_rerun_requests_only_robots_txt_and_writes_no_duplicates(site, tmp_path):
    run(site, tmp_path, artists=(), letters=["a"])
    first = (tmp_path / "out" / "songs.jsonl").read_bytes()
    n = len(site.paths())
    summary = run(site, tmp_path, artists=["amonamarth", "arcturus"], letters=["a"])
    # only the pages that failed last time are asked for again: the dead link and the page without lyrics
    assert site.paths()[n:] == ["/robots.txt", "/lyrics/arcturus/broken.html", "/lyrics/arcturus/gone.html"]
    assert (tmp_path / "out" / "songs.jsonl").read_bytes() == first
    assert (summary["songs"], summary["existing"]) == (0, len(expected_songs(site.base_url, ["amonamarth", "arcturus"])))


def test_rerun_without_cache_does_not_refetch_finished_albums(site, tmp_path):
    import shutil

    run(site, tmp_path, artists=["amonamarth"])
    shutil.rmtree(tmp_path / "cache")
    n = len(site.paths())
    run(site, tmp_path, artists=["amonamarth"])
    assert site.paths()[n:] == ["/robots.txt", "/a/amonamarth.html"]  # albums already in songs.jsonl
    assert songs(tmp_path) == expected_songs(site.base_url, ["amonamarth"])


class CrashingSession(requests.Session):
    """Ctrl-C on the n-th request."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def get(self, *args, **kwargs):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt
        return super().get(*args, **kwargs)


def test_resume_after_crash_keeps_finished_albums(site, tmp_path):
    # robots, 4 artist pages, then album pages: crash on the 3rd album page
    with pytest.raises(KeyboardInterrupt):
        run(site, tmp_path, session=CrashingSession(8))
    before = songs(tmp_path)
    assert before == expected_songs(site.base_url, ["amonamarth"])[:4]  # two whole albums, nothing half
    cached = {str(p) for p in (tmp_path / "cache").rglob("*.html")}
    n = len(site.paths())
    summary = run(site, tmp_path)
    assert songs(tmp_path) == expected_songs(site.base_url, ARTISTS)  # no loss, no duplicates
    again = site.paths()[n:]
    assert again[0] == "/robots.txt" and all(
        str(fetcher.Fetcher(site.base_url, tmp_path / "cache").cache_path(site.base_url + p)) not in cached for p in again[1:])
    assert (summary["songs"], summary["existing"]) == (12 - 4, 4)


def test_resume_after_killing_the_cli(site, tmp_path):
    out = tmp_path / "out" / "songs.jsonl"
    cmd = [sys.executable, "-m", "atomlib.cli", "scrape", "darklyrics", "--base-url", site.base_url,
           "--out", tmp_path / "out", "--cache", tmp_path / "cache", "--delay", "0.25",
           *[x for a in ARTISTS for x in ("--artist", a)]]
    proc = subprocess.Popen(list(map(str, cmd)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not (out.exists() and out.read_bytes().count(b"\n") >= 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the scraper finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = out.read_text(encoding="utf-8")
    assert before and before.endswith("\n") and all(json.loads(line) for line in before.splitlines())
    run(site, tmp_path)
    after = out.read_text(encoding="utf-8")
    assert after.startswith(before)
    assert songs(tmp_path) == expected_songs(site.base_url, ARTISTS)


def test_torn_last_line_is_cut_and_its_album_redone(site, tmp_path):
    run(site, tmp_path, artists=["amonamarth"])
    path = tmp_path / "out" / "songs.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:40], encoding="utf-8")  # killed while writing track 3
    summary = run(site, tmp_path, artists=["amonamarth"])
    assert songs(tmp_path) == expected_songs(site.base_url, ["amonamarth"]) and summary["songs"] == len(lines) - 2


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", Path(a).name)), real_replace(a, b)))
    fetcher.write_atomic(tmp_path / "c" / "page.html", b"<html>")  # the writer the cache uses (paths.write_atomic)
    assert calls[0] == "fsync" and calls[1][0] == "replace" and calls[1][1].startswith(".tmp-")  # synced, then renamed
    assert (tmp_path / "c" / "page.html").read_bytes() == b"<html>"

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        fetcher.write_atomic(tmp_path / "c" / "other.html", b"<html>")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["page.html"]  # neither a half page nor a temp file


# --- what the cache keeps, and what it does not -------------------------------------------------

BUSY = b"<html><body><h1>Server busy</h1><p>Please try again later.</p></body></html>"


def test_error_page_sent_with_200_is_not_cached(site, tmp_path, capsys):
    site.fail("/a/amonamarth.html", (200, {}, BUSY))  # an artist page without albums
    site.fail("/lyrics/1349/hellfire.html", (200, {}, BUSY))  # an album page without lyrics
    summary = run(site, tmp_path, artists=["amonamarth", "1349"])
    assert songs(tmp_path) == [] and summary["skipped"] == 2
    assert capsys.readouterr().err.count("could not parse") == 2
    n = len(site.paths())
    run(site, tmp_path, artists=["amonamarth", "1349"])
    assert "/a/amonamarth.html" in site.paths()[n:] and "/lyrics/1349/hellfire.html" in site.paths()[n:]
    assert songs(tmp_path) == expected_songs(site.base_url, ["amonamarth", "1349"])


def test_failures_are_tried_again_on_the_next_run(site, tmp_path):
    site.fail("/lyrics/1349/hellfire.html", (404, {}))
    site.fail("/lyrics/amonamarth/sorrowthroughoutheninewords.html", (500, {}))
    summary = run(site, tmp_path, artists=["amonamarth", "1349"], retries=0)
    assert summary["failed"] == 2
    summary = run(site, tmp_path, artists=["amonamarth", "1349"], retries=0)
    assert summary["failed"] == 0 and site.paths().count("/lyrics/1349/hellfire.html") == 2
    want = expected_songs(site.base_url, ["amonamarth", "1349"])
    assert sorted(s["url"] for s in songs(tmp_path)) == sorted(s["url"] for s in want)


def one_album_artist(slug, album_slug, title, lyrics):
    return {"slug": slug, "name": slug.upper(), "albums": [
        {"slug": album_slug, "title": title, "year": 2020, "header": f'album: <strong>"{title}"</strong> (2020)',
         "songs": [("Song", lyrics, None)]}]}


def crawl_twice_from_cache(tmp_path, artists, slugs):
    """Crawl a site of these artists, then again from the cache alone: both write the right songs."""
    with FixtureServer(build_site(artists)) as server:
        run(server, tmp_path, artists=slugs)
        assert songs(tmp_path) == expected_songs(server.base_url, slugs, artists)
        (tmp_path / "out" / "songs.jsonl").unlink()
        n = len(server.paths())
        run(server, tmp_path, artists=slugs)
        assert server.paths()[n:] == ["/robots.txt"]  # every page came from its own cache file
        assert songs(tmp_path) == expected_songs(server.base_url, slugs, artists)
    return [p.name for p in (tmp_path / "cache").rglob("*.html")]


def test_a_1000_character_title_fits_in_a_cache_name(tmp_path):
    title = ("Endless Night " * 72)[:1000]  # the album's URL slug is 1,000 characters too
    names = crawl_twice_from_cache(tmp_path, [one_album_artist("longband", title.replace(" ", "").lower(), title, "on")],
                                   ["longband"])
    assert len(names) == 2 and max(len(n.encode()) for n in names) == 80 + 1 + 16 + 5  # slug-hash.html


def test_urls_that_shared_a_cache_file_no_longer_do(tmp_path):
    # the old names replaced '+' with '_', so these two albums were one file and one album's songs were lost
    albums = [one_album_artist("rockband", slug, title, lyrics)["albums"][0]
              for slug, title, lyrics in [("rock+roll", "Rock Plus Roll", "plus"), ("rock_roll", "Rock Under Roll", "under")]]
    names = crawl_twice_from_cache(tmp_path, [{"slug": "rockband", "name": "ROCKBAND", "albums": albums}], ["rockband"])
    assert len(names) == 3 and sum(n.startswith("lyrics-rockband-rock-roll-") for n in names) == 2


# --- notebook 01: the corpus inputs, with a scrape --------------------------------------------------


def test_corpus_inputs_scrape_the_artists_asked_for(site, capsys):
    inputs = data_setup.corpus_inputs(artists=["amonamarth"], base_url=site.base_url, delay=0, progress=False)
    assert inputs[0] == data_dir("raw") / "public_domain" / "gutenberg"
    assert inputs[1] == data_dir("raw") / "darklyrics" / "songs.jsonl"  # where the songs landed, in the test project
    got = [json.loads(line) for line in inputs[1].read_text(encoding="utf-8").splitlines()]
    assert got == expected_songs(site.base_url, ["amonamarth"])
    assert capsys.readouterr().out.startswith("darklyrics: 1 artists")


# --- the command line ---------------------------------------------------------------------------


def test_cli_prints_the_summary_line(site, tmp_path, capsys):
    rc = main(["scrape", "darklyrics", "--base-url", site.base_url, "--artist", "1349", "--letter", "a",
               "--delay", "0", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(songs(tmp_path)) == 8
    assert "3 artists" in out[-1] and "5 albums" in out[-1] and "8 songs" in out[-1]
    assert "1 skipped" in out[-1] and "1 failed" in out[-1]


@pytest.mark.parametrize("args, needle", [
    (["--letter", "qq"], "--letter"), (["--artist", "!!!"], "--artist"), ([], "--artist"),
    (["--artist", "x", "--base-url", "ftp://h"], "--base-url"), (["--artist", "x", "--delay", "-1"], "--delay"),
])
def test_cli_rejects_bad_arguments(args, needle, capsys):
    assert main(["scrape", "darklyrics", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_unreachable_site_is_one_line_exit_2(tmp_path):
    port = free_port()  # a port nobody listens on
    proc = subprocess.run([sys.executable, "-m", "atomlib.cli", "scrape", "darklyrics", "--base-url",
                           f"http://127.0.0.1:{port}", "--artist", "x", "--delay", "0",
                           "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("atom scrape: error:")
    assert "Traceback" not in proc.stderr and f"127.0.0.1:{port}" in proc.stderr


def test_scrape_function_raises_atom_error_when_unreachable(tmp_path):
    port = free_port()
    with pytest.raises(AtomError, match="cannot connect"):
        scrape_darklyrics(artists=["x"], base_url=f"http://127.0.0.1:{port}", out_dir=tmp_path, cache_dir=tmp_path, delay=0)
