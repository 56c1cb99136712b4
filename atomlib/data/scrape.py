"""The polite, resumable DarkLyrics scraper.

Song lyrics are copyrighted, so ATOM-GPT never ships them: each user collects them on their
own machine. The site blocks clients that fetch quickly, and a crawl of one letter takes
hours, so this module is built around three promises:

- polite: robots.txt is read first and obeyed (a disallowed page is never requested), every
  request waits `delay` seconds after the previous one and names the project in its
  User-Agent, and 429/5xx answers back off exponentially, honouring Retry-After;
- resumable: every page is cached on disk and songs.jsonl is appended album by album with
  flush+fsync, so a crash or Ctrl-C loses at most the album in flight and a re-run requests
  nothing it already has and writes no song twice;
- tolerant: the parsers below read the site as it really is (and as it varies), and a page
  they cannot read is skipped with a warning instead of ending the crawl.

The rules that keep the cache and the crawl honest:

- validate, then cache: a page is cached only once its parser finds what it needs (artist
  links, album links, song headings), so an error page sent with status 200 is skipped now and
  fetched again on the next run;
- failures are not remembered: a 404, a 5xx or a timeout counts in this run's summary only, and
  the next run asks again;
- redirects stay on the site: they are followed only to the same scheme, host and port, only
  to pages robots.txt allows, and at most MAX_REDIRECTS hops; otherwise the page fails;
- bounded cache names: CACHE/<host>/<readable slug, at most 80 characters>-<hash of the URL>.html,
  so long titles fit the file system and two URLs never share a file (caches written with the
  older CACHE/<host>/<path> names are not read: those pages are fetched again);
- atomic cache writes: temp file beside the target, fsync, rename, so a kill never leaves half
  a page that a later run would trust;
- a hostile server costs one page and one warning line: bodies over MAX_PAGE_BYTES, headers or
  bodies not complete within `timeout` seconds, and malformed answers fail the page; nothing hangs or
  raises past the crawl. Only an unreachable site or an unreadable robots.txt ends the run,
  with a one-line AtomError.

The site, as walked here:

    BASE/a.html                      letter index: <a href="a/amonamarth.html">AMON AMARTH</a>
    BASE/a/amonamarth.html           artist page: <h1>AMON AMARTH LYRICS</h1>, then per album
                                     <div class="album"><h2>album: <strong>"Title"</strong> (2004)</h2>
                                     <a href="../lyrics/amonamarth/title.html#1">Song</a><br /> ...
    BASE/lyrics/amonamarth/title.html  album page: <div class="lyrics"><h3><a name="1">1. Song</a></h3>
                                     <br />line<br />line<br /><br />line ... <div class="thanks">

Artists whose slug starts with a digit live under BASE/19/. The output, DIR/songs.jsonl, has one
song per line: artist, artist_slug, album, year, track, title, lyrics, url.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
import unicodedata
import urllib.robotparser
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from bs4 import BeautifulSoup, NavigableString, Tag, UnicodeDammit
from tqdm.auto import tqdm

from atomlib import __version__
from atomlib.errors import AtomError
from atomlib.paths import raw_dir, write_atomic

DEFAULT_BASE_URL = "http://www.darklyrics.com"
USER_AGENT = f"ATOM-GPT/{__version__} (+https://github.com/atom-gpt/atom-gpt; polite lyrics scraper)"
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["19"]


class ParseError(ValueError):
    """A page does not look like the page we expected; the crawl skips it."""


# --- parsing: pure functions from HTML text to plain data -----------------------------------

# These patterns run on URL paths and on header text, never on HTML.
_ARTIST_PATH = re.compile(r"/([a-z]|19)/([^/]+)\.html?$", re.IGNORECASE)
_LYRICS_PATH = re.compile(r"/lyrics/([^/]+)/([^/]+)\.html?$", re.IGNORECASE)
_KIND_PREFIX = re.compile(r"^\s*(album|ep|single|compilation|demo|split|live album|live|mini-album|"
                          r"boxset|box set|best of|soundtrack|ost|dvd|tribute|remix album|other songs)\s*:\s*",
                          re.IGNORECASE)
_TRAILING_YEAR = re.compile(r"\(\s*(\d{4})\s*\)\s*$")
_ANY_YEAR = re.compile(r"\(\s*(\d{4})\s*\)")
_TRACK_HEADING = re.compile(r"^\s*(\d+)\s*[.):-]?\s*(.*)$", re.DOTALL)
_QUOTES = '"\u201c\u201d\u201e'
_LYRICS_SUFFIX = re.compile(r"\s+lyrics\s*$", re.IGNORECASE)
_THANKS_LINE = re.compile(r"^(thanks to\b.*\b(for|sending|correct)|submits, comments, corrections)", re.IGNORECASE)

_SKIP_TAGS = {"script", "style", "noscript", "iframe", "ins", "form", "button", "select", "head", "h1", "h2"}
_CREDIT_WORDS = ("thanks", "note", "credit")
_AD_CLASSES = {"ad", "ads", "advert", "advertisement", "banner", "adsbygoogle", "sponsor"}
_BLOCK_TAGS = {"div", "p", "blockquote", "section", "article", "center", "ul", "ol", "li", "table", "tr"}


def _soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


def _squash(text: str) -> str:
    """Collapse runs of whitespace (source newlines, &nbsp;) into single spaces."""
    return " ".join(text.split())


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in; raises ValueError on a bad port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or ""), parts.port or {"http": 80, "https": 443}.get(scheme)


def _same_site(url: str, page_url: str) -> bool:
    """Same scheme, host and port: the only links and redirects the crawl follows (robots.txt
    speaks for one such origin). A URL with a malformed port is not on the site."""
    try:
        return _origin(url) == _origin(page_url)
    except ValueError:
        return False


def _artist_name(soup: BeautifulSoup) -> str | None:
    """The band name from the page's <h1>, without the trailing 'LYRICS'."""
    h1 = soup.find("h1")
    if h1 is None:
        return None
    name = _LYRICS_SUFFIX.sub("", _squash(h1.get_text()))
    return name or None


def parse_album_header(text: str) -> tuple[str | None, int | None]:
    """'album: "Title" (2004)' -> ("Title", 2004). Quotes or year may be missing; parentheses
    inside a quoted title are kept."""
    text = _squash(text)
    m = _KIND_PREFIX.match(text)
    kind = m.group(1) if m else None
    text = text[m.end():] if m else text
    first = min((i for i in (text.find(q) for q in _QUOTES) if i >= 0), default=-1)
    last = max(text.rfind(q) for q in _QUOTES)
    if first >= 0 and last > first:  # quoted title: the year is what follows the closing quote
        title, rest = text[first + 1:last].strip(), text[last + 1:]
        years = _ANY_YEAR.findall(rest)
        year = int(years[-1]) if years else None
    else:  # bare title: only a trailing (YEAR) is the year
        m = _TRAILING_YEAR.search(text)
        year = int(m.group(1)) if m else None
        title = (text[:m.start()] if m else text).strip()
    return (title or kind or None), year


def parse_letter_index(html: str, base_url: str) -> list[dict]:
    """Artists on a letter page: [{"slug", "name", "letter", "url"}] in page order.

    Only links of the form <letter>/<slug>.html count; the A-Z navigation and other links do not.
    """
    root = urlsplit(base_url).path  # the site's folder: "" for http://host or http://host/a.html
    root = root.rsplit("/", 1)[0] if root.endswith((".html", ".htm")) else root.rstrip("/")
    artists, seen = [], set()
    for a in _soup(html).find_all("a", href=True):
        url = urljoin(base_url, a["href"].strip()).split("#")[0]
        path = urlsplit(url).path
        m = _ARTIST_PATH.search(path)
        if not m or path[:m.start()] != root or not _same_site(url, base_url):
            continue
        slug = m.group(2).lower()
        if slug in seen:
            continue
        seen.add(slug)
        artists.append({"slug": slug, "name": _squash(a.get_text()) or slug,
                        "letter": m.group(1).lower(), "url": url})
    if not artists:
        raise ParseError("no artist links (LETTER/SLUG.html) on the letter page")
    return artists


def parse_artist_page(html: str, page_url: str) -> dict:
    """An artist page -> {"artist", "albums": [{"title", "year", "url", "tracks": [(n, title)]}]}.

    Walks the page in document order: each <h2> opens an album block, each link into
    lyrics/<slug>/<album>.html belongs to the block above it (real pages wrap the block in
    <div class="album">, but nothing here depends on that). Albums are keyed by their page URL.
    """
    soup = _soup(html)
    albums: dict[str, dict] = {}
    header = (None, None)
    for el in soup.find_all(["h2", "a"]):
        if el.name == "h2":
            header = parse_album_header(el.get_text())
            continue
        if not el.get("href"):
            continue
        url = urljoin(page_url, el["href"].strip())
        album_url, _, frag = url.partition("#")
        if not _LYRICS_PATH.search(urlsplit(album_url).path) or not _same_site(album_url, page_url):
            continue
        album = albums.setdefault(album_url, {"title": header[0], "year": header[1], "url": album_url, "tracks": []})
        if frag.isdigit():
            album["tracks"].append((int(frag), _squash(el.get_text())))
    if not albums:
        raise ParseError("no album links (lyrics/SLUG/ALBUM.html) on the artist page")
    return {"artist": _artist_name(soup), "albums": list(albums.values())}


class _Songs:
    """Collects songs while walking the lyrics block: headings open songs, <br> ends lines,
    credit blocks close the current song, and so does leaving the element that holds the heading."""

    def __init__(self):
        self.songs: list[dict] = []
        self.line: list[str] = []
        self.open = False
        self.owner = None  # the element whose end also ends the open song

    def text(self, s: str):
        if self.open:
            self.line.append(s)

    def newline(self):
        if self.open:
            self.songs[-1]["lines"].append(_squash("".join(self.line)))
        self.line = []

    def soft_break(self):
        """End the line only if it has text (block elements start and end lines)."""
        if _squash("".join(self.line)):
            self.newline()
        self.line = []

    def blank(self):
        if self.open:
            self.soft_break()
            self.songs[-1]["lines"].append("")

    def start(self, track: int, title: str, owner: Tag):
        self.close()
        self.songs.append({"track": track, "title": title, "lines": []})
        self.open, self.owner = True, owner

    def close(self):
        self.soft_break()
        self.open = False


def _is_credit(tag: Tag) -> bool:
    names = " ".join(tag.get("class", [])) + " " + str(tag.get("id", ""))
    return any(w in names.lower() for w in _CREDIT_WORDS)


def _song_owner(h: Tag) -> Tag:
    """The element holding a song: the heading's parent, or higher when that parent wraps
    nothing but the heading (<div class="title"><h3>..</h3></div> then the lines)."""
    owner, text = h.parent, _squash(h.get_text())
    while owner.parent is not None and _squash(owner.get_text()) == text:
        owner = owner.parent
    return owner


def _heading(h: Tag, fallback: int) -> tuple[int, str]:
    """'<h3><a name="3">3. Title</a></h3>' -> (3, "Title"). The number comes from the anchor's
    name (or id) when it has one, else from the text, else it is the song's position."""
    text = _squash(h.get_text())
    anchors = [str(a.get("name") or a.get("id") or "") for a in h.find_all("a")] + [str(h.get("id") or "")]
    anchor = next((int(x) for x in anchors if x.isdigit()), None)
    m = _TRACK_HEADING.match(text)
    if m and (anchor is None or int(m.group(1)) == anchor):
        return int(m.group(1)), m.group(2).strip()
    return (anchor if anchor is not None else fallback), text


def _walk(node: Tag, songs: _Songs):
    for child in node.children:
        if isinstance(child, NavigableString):
            if type(child) is NavigableString:  # not a comment, doctype, CDATA, ...
                songs.text(str(child))
            continue
        name = child.name
        if name == "br":
            songs.newline()
        elif name == "h3":
            songs.start(*_heading(child, fallback=len(songs.songs) + 1), owner=_song_owner(child))
        elif name in _SKIP_TAGS or _AD_CLASSES & set(child.get("class", [])):
            continue
        elif name in _BLOCK_TAGS and _is_credit(child):  # thanks / notes after the last song
            songs.close()
        elif name in _BLOCK_TAGS:
            songs.soft_break()
            _walk(child, songs)
            if name == "p":  # a paragraph is a stanza
                songs.blank()
            else:
                songs.soft_break()
        else:  # inline (<i>, <b>, <span>, <a>): its text stays on the line
            _walk(child, songs)
    if songs.open and songs.owner is node:
        songs.close()


def _stanzas(lines: list[str]) -> str:
    """Lines -> text: stanzas separated by exactly one blank line, no blank lines at either end."""
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def _drop_trailing_credits(lines: list[str]) -> list[str]:
    """Drop a last stanza made only of 'Thanks to X for sending these lyrics.' lines (credits
    written as plain text after the last song rather than in <div class="thanks">)."""
    end = len(lines)
    while end and not lines[end - 1]:
        end -= 1
    start = end
    while start and lines[start - 1]:
        start -= 1
    if start < end and all(_THANKS_LINE.match(line) for line in lines[start:end]):
        return lines[:start]
    return lines


def _read_songs(roots: list[Tag]) -> _Songs:
    songs = _Songs()
    for root in roots:
        _walk(root, songs)
        songs.close()
    return songs


def parse_album_page(html: str, page_url: str) -> dict:
    """An album page -> {"artist", "album", "year", "songs": [{"track", "title", "lyrics", "url"}]}.

    Songs are the <h3> headings inside <div class="lyrics"> (the whole page when that div is
    missing) and the text up to the next heading, one line per <br>. <i> annotations stay as
    text on their line; credit/thanks/note blocks and scripts are left out.
    """
    soup = _soup(html)
    blocks = soup.find_all("div", class_="lyrics")
    songs = _read_songs([b for b in blocks if b.find_parent("div", class_="lyrics") is None])
    if not songs.songs:  # no lyrics div, or the headings sit outside it: read the whole page
        songs = _read_songs([soup.body or soup])
    if not songs.songs:
        raise ParseError("no song headings (<h3>N. Title</h3>) on the album page")
    songs.songs[-1]["lines"] = _drop_trailing_credits(songs.songs[-1]["lines"])
    header = soup.find("h2")
    album, year = parse_album_header(header.get_text()) if header else (None, None)
    page = page_url.split("#")[0]
    return {"artist": _artist_name(soup), "album": album, "year": year,
            "songs": [{"track": s["track"], "title": s["title"], "lyrics": _stanzas(s["lines"]),
                       "url": f"{page}#{s['track']}"} for s in songs.songs]}


# --- fetching: robots.txt, delay, retries, on-disk cache ------------------------------------


class _PageFailed(Exception):
    """A page could not be fetched (404, retries exhausted, a bad redirect, too big); the crawl
    counts it for this run's summary and goes on. Nothing about it is remembered on disk."""


class _PageUnreadable(Exception):
    """A page arrived but lacks what its parser needs (e.g. an error page sent with status 200)."""


class _Answer(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes  # read for 200 answers only


_REDIRECTS = (301, 302, 303, 307, 308)


def _decode(body: bytes, content_type: str) -> str:
    """Bytes -> text: UTF-8 when it is valid, else the declared charset, else bs4's guess."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    ct = content_type.lower()
    if "charset=" in ct:
        charset = ct.split("charset=")[-1].split(";")[0].strip().strip("'\"")
        try:
            return body.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    return UnicodeDammit(body, is_html=True).unicode_markup or body.decode("cp1252", errors="replace")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:  # seconds
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _cannot_connect(e: requests.ConnectionError) -> bool:
    """True when no connection could be opened (site down, DNS, no network), False when the
    server answered but broke the answer (malformed status line, hung up mid-way)."""
    cause = e.args[0] if e.args else None
    return isinstance(getattr(cause, "reason", cause), urllib3.exceptions.NewConnectionError)


def _warn(msg: str):
    tqdm.write("warning: " + " ".join(msg.split()), file=sys.stderr)  # always one line


def _slug(text: str, limit: int = 80) -> str:
    """'/lyrics/amonamarth/twilight?x=1' -> 'lyrics-amonamarth-twilight-x-1': ASCII letters,
    digits and '-', at most `limit` characters."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:limit].strip("-")


class Fetcher:
    """One polite HTTP client: robots.txt, a delay between requests, retries, a page cache.

    `requests` counts the HTTP requests actually sent (tests and the summary read it).
    """

    MAX_RETRY_AFTER = 300.0  # never sleep longer than this on one Retry-After
    MAX_REDIRECTS = 5  # hops per page, as RFC 9309 allows for robots.txt
    MAX_PAGE_BYTES = 5_000_000  # real pages are under 200 kB; anything far bigger is not a page

    def __init__(self, base_url: str, cache_dir: Path, delay: float = 3.0, session=None,
                 retries: int = 4, backoff: float = 2.0, timeout: float = 30.0):
        self.base_url, self.cache_dir = base_url, Path(cache_dir)
        self.delay, self.retries, self.backoff, self.timeout = delay, retries, backoff, timeout
        self.session = session if session is not None else requests.Session()
        self.robots = urllib.robotparser.RobotFileParser()
        self.requests = 0
        self._last = None  # monotonic time of the last request

    def cache_path(self, url: str) -> Path:
        """CACHE/<host-port>/<slug of the path>-<hash of the URL>.html. The slug lets a person find
        a page; the hash (of the whole URL, fragment aside) keeps two URLs from sharing a file; both
        are bounded, so a 1,000-character title still fits the file system's 255-byte names."""
        url = url.split("#")[0]
        parts = urlsplit(url)
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
        name = _slug(parts.path.removesuffix(".html") + "?" + parts.query) or "index"
        return self.cache_dir / (_slug(parts.netloc) or "host") / f"{name}-{digest}.html"

    def _wait_politely(self):
        if self._last is not None:
            pause = self.delay - (time.monotonic() - self._last)
            if pause > 0:
                time.sleep(pause)

    def _read_body(self, resp: requests.Response, started: float) -> bytes:
        """The body, at most MAX_PAGE_BYTES of it, all within `timeout` seconds of the request:
        requests' own timeout is per read, so a server that trickles bytes would never hit it."""
        declared = resp.headers.get("Content-Length", "").strip()
        if declared.isdigit() and int(declared) > self.MAX_PAGE_BYTES:
            raise _PageFailed(f"the page is {int(declared):,} bytes, over the {self.MAX_PAGE_BYTES:,}-byte limit")
        read = getattr(resp.raw, "read1", resp.raw.read)  # read1 returns what has arrived (urllib3 >= 2)
        body = bytearray()
        while chunk := read(64 * 1024, decode_content=True):
            body += chunk
            if len(body) > self.MAX_PAGE_BYTES:
                raise _PageFailed(f"the page is over the {self.MAX_PAGE_BYTES:,}-byte limit")
            if time.monotonic() - started > self.timeout:
                raise requests.Timeout()
        return bytes(body)

    def _get_head(self, url: str) -> requests.Response:
        """The response up to its headers (stream=True), within `timeout` seconds in all. requests'
        own timeout is per read, so a server that drips its status line and headers a byte at a
        time would never hit it: the request runs in a daemon thread, and one that overruns is
        abandoned (it closes its response, if one ever comes) and counts as a timeout."""
        box: dict = {}

        def get():
            try:
                resp = self.session.get(url, headers={"User-Agent": USER_AGENT}, timeout=self.timeout,
                                        stream=True, allow_redirects=False)
            except BaseException as e:  # noqa: BLE001 - handed to the caller below
                box["error"] = e
                return
            box["resp"] = resp
            if box.get("abandoned"):
                resp.close()

        worker = threading.Thread(target=get, daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            box["abandoned"] = True
            if "resp" in box:  # it arrived just now: whichever side sees it closes it
                box["resp"].close()
            raise requests.Timeout()
        if "error" in box:
            raise box["error"]
        return box["resp"]

    def request(self, url: str, fatal_connect: bool = False) -> _Answer:
        """One GET (redirects not followed) with the project's User-Agent; retries 429/5xx,
        timeouts and broken answers with exponential backoff (Retry-After wins when given).
        Returns the final answer (any status below 500 but 429)."""
        reason = ""
        for attempt in range(self.retries + 1):
            self._wait_politely()
            wait = self.backoff * 2 ** attempt
            try:
                self.requests += 1
                started = time.monotonic()
                with self._get_head(url) as resp:
                    if resp.status_code != 429 and resp.status_code < 500:
                        body = self._read_body(resp, started) if resp.status_code == 200 else b""
                        return _Answer(resp.status_code, resp.headers, body)
                    reason = f"HTTP {resp.status_code}"
                    after = _retry_after(resp.headers)
                    if after is not None:
                        wait = min(after, self.MAX_RETRY_AFTER)
            except (requests.Timeout, urllib3.exceptions.TimeoutError):
                reason = f"timed out after {self.timeout:g} s"
            except requests.ConnectionError as e:
                if not _cannot_connect(e):  # the server answered, badly: worth another try
                    reason = "a malformed answer (ConnectionError)"
                elif fatal_connect:
                    raise AtomError(f"cannot connect to {self.base_url} ({type(e).__name__}); "
                                    "check --base-url and your network connection.") from None
                else:
                    reason = "connection failed"
            except (requests.RequestException, urllib3.exceptions.HTTPError, ValueError) as e:
                reason = f"a malformed answer ({type(e).__name__})"  # a broken transfer, a bad Location, ...
            finally:
                self._last = time.monotonic()
            if attempt < self.retries:
                _warn(f"{reason} from {url}; retrying in {wait:g} s ({attempt + 1}/{self.retries})")
                time.sleep(wait)
        if reason == "connection failed":
            raise AtomError(f"lost the connection to {self.base_url} while fetching {url}; "
                            "re-run the same command later to resume where it stopped.")
        raise _PageFailed(f"{reason} after {self.retries + 1} attempts")

    def fetch(self, url: str, robots_txt: bool = False) -> _Answer:
        """request(), following redirects only within the site (same scheme, host and port), only to
        pages robots.txt allows, and at most MAX_REDIRECTS hops. `robots_txt`: this is robots.txt
        itself, the first request, so there are no rules to check yet and a refused connection ends the run."""
        for _ in range(self.MAX_REDIRECTS + 1):
            answer = self.request(url, fatal_connect=robots_txt)
            if answer.status not in _REDIRECTS:
                return answer
            url = self._redirect_target(url, answer.headers.get("Location", ""), robots_txt)
        raise _PageFailed(f"more than {self.MAX_REDIRECTS} redirects")

    def _redirect_target(self, url: str, location: str, robots_txt: bool) -> str:
        if not location.strip():
            raise _PageFailed("a redirect without a Location")
        try:
            target = urljoin(url, location.strip()).split("#")[0]
        except ValueError:  # e.g. 'http://[oops'
            raise _PageFailed(f"a malformed redirect to {location[:100]!r}") from None
        if not _same_site(target, self.base_url):
            raise _PageFailed(f"redirects off the site, to {target[:200]}")
        if not robots_txt and not self.allowed(target):
            raise _PageFailed(f"redirects to {target[:200]}, which robots.txt disallows")
        return target

    def load_robots(self):
        """Fetch and parse BASE/robots.txt (never cached: the site may change its mind)."""
        url = urljoin(self.base_url + "/", "/robots.txt")
        try:
            answer = self.fetch(url, robots_txt=True)
        except _PageFailed as e:
            raise AtomError(f"{url} could not be read ({e}); try again later, or check --base-url.") from None
        if answer.status in (401, 403):
            self.robots.disallow_all = True
        elif answer.status != 200:
            self.robots.allow_all = True  # no robots.txt: everything is allowed
        else:
            self.robots.parse(_decode(answer.body, "").splitlines())
        self.robots.modified()
        crawl_delay = self.robots.crawl_delay(USER_AGENT)
        if crawl_delay and float(crawl_delay) > self.delay:
            _warn(f"robots.txt asks for Crawl-delay {crawl_delay}; waiting that long between requests")
            self.delay = float(crawl_delay)

    def allowed(self, url: str) -> bool:
        return self.robots.can_fetch(USER_AGENT, url)

    def get(self, url: str, parse):
        """parse(text, url) for the page: from the cache when it is there, else from the site.
        A fetched page is cached only once `parse` accepts it, so an error page sent with status
        200 is skipped now and fetched again next run; a cached copy the parser no longer accepts
        is dropped and fetched again."""
        path = self.cache_path(url)
        if path.is_file():
            try:
                return parse(path.read_text(encoding="utf-8"), url)
            except Exception:  # noqa: BLE001 - an old or damaged copy: fetch it again
                path.unlink(missing_ok=True)
        answer = self.fetch(url)
        if answer.status != 200:
            raise _PageFailed(f"HTTP {answer.status}")
        text = _decode(answer.body, answer.headers.get("Content-Type", ""))
        try:
            result = parse(text, url)
        except Exception as e:  # noqa: BLE001 - one odd page must not end a crawl of hours
            raise _PageUnreadable(f"{type(e).__name__}: {e}") from None
        write_atomic(path, text.encode("utf-8"))
        return result


# --- output: songs.jsonl, appended album by album, deduplicated -----------------------------


class SongsFile:
    """songs.jsonl opened for appending, knowing every song already in it.

    A song is a duplicate when its url, or its (artist_slug, album, track), is already there.
    An album counts as done once any of its songs is on disk (albums are written in one go);
    a line torn by a kill mid-write is cut off and its album is redone.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.urls: set[str] = set()
        self.keys: set[tuple] = set()
        self.done_albums: set[str] = set()
        self.existing = 0
        self._load()

    def _load(self):
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        last_album = None
        for raw in data.split(b"\n")[:-1]:  # the piece after the last newline is torn or empty
            try:
                song = json.loads(raw)
            except ValueError:
                continue
            self._remember(song)
            last_album = song.get("url", "").split("#")[0]
            self.existing += 1
        if data and not data.endswith(b"\n"):  # torn last line: cut it, redo its album
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)
            self.done_albums.discard(last_album)
            _warn(f"{self.path} ended in a half-written line (an interrupted run); it was removed")

    def _remember(self, song: dict):
        url = song.get("url", "")
        self.urls.add(url)
        self.keys.add((song.get("artist_slug"), song.get("album"), song.get("track")))
        self.done_albums.add(url.split("#")[0])

    def is_new(self, song: dict) -> bool:
        return song["url"] not in self.urls and (song["artist_slug"], song["album"], song["track"]) not in self.keys

    def append_album(self, songs: list[dict]) -> int:
        """Append the album's new songs in one write, flushed and fsynced; returns how many."""
        new = []
        for song in songs:
            if self.is_new(song):
                self._remember(song)
                new.append(song)
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in new))
                f.flush()
                os.fsync(f.fileno())
        return len(new)


# --- the crawl ------------------------------------------------------------------------------


def normalize_slug(name: str) -> str:
    """'Amon Amarth' / 'amonamarth' / 'Mötley Crüe' -> 'amonamarth' / 'motleycrue' (the site's slugs)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]", "", ascii_name.lower().removesuffix(".html"))
    if not slug:
        raise AtomError(f"--artist {name!r} is not an artist slug; use the name in the site's URL, e.g. amonamarth.")
    return slug


def normalize_letter(letter: str) -> str:
    letter = letter.strip().lower()
    letter = "19" if letter in ("#", "0-9", "0") else letter
    if letter not in LETTERS:
        raise AtomError(f"--letter {letter!r} is not an index letter; "
                        "use a..z, or 19 for artists whose name starts with a digit.")
    return letter


def artist_url(base_url: str, slug: str) -> str:
    letter = slug[0] if slug[0].isalpha() else "19"
    return f"{base_url}/{letter}/{slug}.html"


def _normalize_base(base_url: str) -> str:
    base = base_url.strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AtomError(f"--base-url {base_url!r} is not an http(s) URL; use e.g. {DEFAULT_BASE_URL}.")
    return base


def format_summary(summary: dict) -> str:
    return (f"darklyrics: {summary['artists']} artists, {summary['albums']} albums, "
            f"{summary['songs']} songs written ({summary['existing']} already on disk), "
            f"{summary['skipped']} skipped, {summary['failed']} failed -> {summary['out']}")


class _Crawl:
    """Counts what happened and turns fetch/parse trouble into one-line warnings."""

    def __init__(self, fetcher: Fetcher):
        self.fetcher = fetcher
        self.stats = {"artists": 0, "albums": 0, "songs": 0, "skipped": 0, "failed": 0}

    def parse(self, parser, url: str):
        """parser(page text, url), or None when the page is disallowed, failed or unreadable."""
        if not self.fetcher.allowed(url):
            _warn(f"robots.txt disallows {url}; skipped")
            self.stats["skipped"] += 1
            return None
        try:
            return self.fetcher.get(url, parser)
        except _PageFailed as e:
            _warn(f"could not fetch {url}: {e}; skipped")
            self.stats["failed"] += 1
        except _PageUnreadable as e:
            _warn(f"could not parse {url} ({e}); skipped")
            self.stats["skipped"] += 1
        return None


def scrape_darklyrics(artists=(), letters=(), base_url: str = DEFAULT_BASE_URL, out_dir=None,
                      delay: float = 3.0, cache_dir=None, session=None, progress: bool = True,
                      retries: int = 4, backoff: float = 2.0, timeout: float = 30.0) -> dict:
    """Crawl the given artists (slugs) and/or index letters into OUT/songs.jsonl.

    Returns a summary: artists, albums, songs (written now), existing (already on disk), skipped
    (robots.txt or unparsable), failed (could not fetch), requests (HTTP requests sent), out.
    """
    base = _normalize_base(base_url)
    if delay < 0:
        raise AtomError(f"--delay {delay} is negative; give the seconds to wait between requests (3 is polite).")
    artists = [artists] if isinstance(artists, str) else artists  # one slug given as a string
    letters = [letters] if isinstance(letters, str) else letters
    slugs = [normalize_slug(a) for a in artists]
    letters = [normalize_letter(x) for x in letters]
    if not slugs and not letters:
        raise AtomError("scrape_darklyrics needs at least one artist slug or index letter.")
    out_dir = Path(out_dir) if out_dir is not None else raw_dir() / "darklyrics"
    cache_dir = Path(cache_dir) if cache_dir is not None else raw_dir() / "darklyrics" / "cache"

    fetcher = Fetcher(base, cache_dir, delay=delay, session=session, retries=retries, backoff=backoff, timeout=timeout)
    fetcher.load_robots()  # first request; ends the run with an AtomError when the site is unreachable
    crawl = _Crawl(fetcher)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        songs_file = SongsFile(out_dir / "songs.jsonl")
    except OSError as e:
        raise AtomError(f"cannot write to {out_dir} ({e.strerror}); choose another folder with --out.") from None

    # 1. which artists: the letter pages' links, then the slugs asked for by name
    todo: dict[str, tuple[str, str | None]] = {}  # slug -> (artist page url, name on the index)
    for letter in letters:
        for a in crawl.parse(parse_letter_index, f"{base}/{letter}.html") or []:
            todo.setdefault(a["slug"], (a["url"], a["name"]))
    for slug in slugs:
        todo.setdefault(slug, (artist_url(base, slug), None))

    # 2. artist pages -> the list of albums (so the album bar knows its total)
    albums = []
    for slug, (url, hint) in tqdm(todo.items(), desc="artists", unit="artist", disable=not progress):
        page = crawl.parse(parse_artist_page, url)
        if page is None:
            continue
        crawl.stats["artists"] += 1
        albums += [(slug, page["artist"] or hint, album) for album in page["albums"]]

    # 3. album pages -> songs, appended album by album
    bar = tqdm(albums, desc="albums", unit="album", disable=not progress)
    for slug, name, album in bar:
        bar.set_postfix_str((name or slug)[:24], refresh=False)
        if album["url"] in songs_file.done_albums:
            crawl.stats["albums"] += 1  # on disk from an earlier run: nothing to fetch
            continue
        page = crawl.parse(parse_album_page, album["url"])
        if page is None:
            continue
        title = album["title"] or page["album"] or Path(urlsplit(album["url"]).path).stem
        year = album["year"] if album["year"] is not None else page["year"]
        songs = [{"artist": name or page["artist"] or slug, "artist_slug": slug,
                  "album": title, "year": year, "track": s["track"], "title": s["title"],
                  "lyrics": s["lyrics"], "url": s["url"]} for s in page["songs"]]
        crawl.stats["songs"] += songs_file.append_album(songs)
        crawl.stats["albums"] += 1
    bar.close()

    return {**crawl.stats, "existing": songs_file.existing, "requests": fetcher.requests,
            "out": str(songs_file.path)}
