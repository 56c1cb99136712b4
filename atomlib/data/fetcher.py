"""The polite, hardened HTTP fetch the DarkLyrics crawl stands on: robots.txt, a delay, retries,
one deadline and a size cap per page, redirects only within the site, and a page cache.

The real site blocks clients that fetch quickly and a crawl takes hours, so a Fetcher is
polite and forgets nothing it need not fetch again:

- polite: robots.txt is read first and obeyed (a disallowed page is never requested), every
  request waits `delay` seconds after the previous one and names the project in its
  User-Agent, and 429/5xx answers back off exponentially, honouring Retry-After;
- validate, then cache: a page is cached only once its parser finds what it needs, so an error
  page sent with status 200 is skipped now and fetched again on the next run;
- failures are not remembered: a 404, a 5xx or a timeout counts in this run's summary only, and
  the next run asks again;
- redirects stay on the site: they are followed only to the same scheme, host and port, only
  to pages robots.txt allows, and at most MAX_REDIRECTS hops; otherwise the page fails;
- bounded cache names: CACHE/<host>/<readable slug, at most 80 characters>-<hash of the URL>.html,
  so long titles fit the file system and two URLs never share a file (caches written with the
  older CACHE/<host>/<path> names are not read: those pages are fetched again);
- atomic cache writes (paths.write_atomic), so a kill never leaves half a page that a later run
  would trust;
- a hostile server costs one page and one warning line: bodies over MAX_PAGE_BYTES, headers or
  bodies not complete within `timeout` seconds, and malformed answers fail the page (PageFailed);
  nothing hangs. Only an unreachable site or an unreadable robots.txt ends the run, with a
  one-line AtomError.
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
import time
import urllib.robotparser
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from bs4 import UnicodeDammit
from tqdm.auto import tqdm

from atomlib import __version__
from atomlib.errors import AtomError
from atomlib.paths import write_atomic
from atomlib.untrusted import Deadline, DeadlinePassed, TooLarge, one_line, read_capped

USER_AGENT = f"ATOM-GPT/{__version__} (+https://github.com/atom-gpt/atom-gpt; polite lyrics scraper)"


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in; raises ValueError on a bad port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or ""), parts.port or {"http": 80, "https": 443}.get(scheme)


def same_site(url: str, page_url: str) -> bool:
    """Same scheme, host and port: the only links and redirects the crawl follows (robots.txt
    speaks for one such origin). A URL with a malformed port is not on the site."""
    try:
        return _origin(url) == _origin(page_url)
    except ValueError:
        return False


class PageFailed(Exception):
    """A page could not be fetched (404, retries exhausted, a bad redirect, too big); the crawl
    counts it for this run's summary and goes on. Nothing about it is remembered on disk."""


class PageUnreadable(Exception):
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


def warn(msg: str):
    """One warning line above the progress bars, with nothing a server sent able to break it."""
    tqdm.write("warning: " + one_line(msg), file=sys.stderr)


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

    def _read_body(self, resp: requests.Response, deadline: Deadline) -> bytes:
        """The body, at most MAX_PAGE_BYTES of it, all by `deadline` (the request's `timeout`):
        requests' own timeout is per read, so a server that trickles bytes would never hit it."""
        declared = resp.headers.get("Content-Length", "").strip()
        read = getattr(resp.raw, "read1", resp.raw.read)  # read1 returns what has arrived (urllib3 >= 2)
        try:
            return read_capped(lambda n: read(n, decode_content=True), self.MAX_PAGE_BYTES,
                               int(declared) if declared.isdigit() else None, deadline)
        except TooLarge as e:
            size = f"{e.declared:,} bytes, " if e.declared is not None else ""
            raise PageFailed(f"the page is {size}over the {self.MAX_PAGE_BYTES:,}-byte limit") from None
        except DeadlinePassed:
            raise requests.Timeout() from None

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
                deadline = Deadline.after(self.timeout)
                with self._get_head(url) as resp:
                    if resp.status_code != 429 and resp.status_code < 500:
                        body = self._read_body(resp, deadline) if resp.status_code == 200 else b""
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
                warn(f"{reason} from {url}; retrying in {wait:g} s ({attempt + 1}/{self.retries})")
                time.sleep(wait)
        if reason == "connection failed":
            raise AtomError(f"lost the connection to {self.base_url} while fetching {url}; "
                            "re-run the same command later to resume where it stopped.")
        raise PageFailed(f"{reason} after {self.retries + 1} attempts")

    def fetch(self, url: str, robots_txt: bool = False) -> _Answer:
        """request(), following redirects only within the site (same scheme, host and port), only to
        pages robots.txt allows, and at most MAX_REDIRECTS hops. `robots_txt`: this is robots.txt
        itself, the first request, so there are no rules to check yet and a refused connection ends the run."""
        for _ in range(self.MAX_REDIRECTS + 1):
            answer = self.request(url, fatal_connect=robots_txt)
            if answer.status not in _REDIRECTS:
                return answer
            url = self._redirect_target(url, answer.headers.get("Location", ""), robots_txt)
        raise PageFailed(f"more than {self.MAX_REDIRECTS} redirects")

    def _redirect_target(self, url: str, location: str, robots_txt: bool) -> str:
        if not location.strip():
            raise PageFailed("a redirect without a Location")
        try:
            target = urljoin(url, location.strip()).split("#")[0]
        except ValueError:  # e.g. 'http://[oops'
            raise PageFailed(f"a malformed redirect to {location[:100]!r}") from None
        if not same_site(target, self.base_url):
            raise PageFailed(f"redirects off the site, to {target[:200]}")
        if not robots_txt and not self.allowed(target):
            raise PageFailed(f"redirects to {target[:200]}, which robots.txt disallows")
        return target

    def load_robots(self):
        """Fetch and parse BASE/robots.txt (never cached: the site may change its mind)."""
        url = urljoin(self.base_url + "/", "/robots.txt")
        try:
            answer = self.fetch(url, robots_txt=True)
        except PageFailed as e:
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
            warn(f"robots.txt asks for Crawl-delay {crawl_delay}; waiting that long between requests")
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
            raise PageFailed(f"HTTP {answer.status}")
        text = _decode(answer.body, answer.headers.get("Content-Type", ""))
        try:
            result = parse(text, url)
        except Exception as e:  # noqa: BLE001 - one odd page must not end a crawl of hours
            raise PageUnreadable(f"{type(e).__name__}: {e}") from None
        write_atomic(path, text.encode("utf-8"))
        return result
