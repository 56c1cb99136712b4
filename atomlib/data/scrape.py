"""The polite, resumable DarkLyrics scraper: letters and artists -> DIR/songs.jsonl.

Song lyrics are copyrighted, so ATOM-GPT never ships them: each user collects them on their
own machine. The site blocks clients that fetch quickly, and a crawl of one letter takes
hours, so the crawl keeps three promises:

- polite: every request goes through one Fetcher (atomlib.data.fetcher): robots.txt obeyed,
  `delay` seconds between requests, backoff on 429/5xx, the page cache;
- resumable: every page is cached on disk and songs.jsonl is appended album by album with
  flush+fsync, so a crash or Ctrl-C loses at most the album in flight and a re-run requests
  nothing it already has and writes no song twice;
- tolerant: the parsers (atomlib.data.darklyrics) read the site as it really is, and a page
  that cannot be fetched or read is skipped with one warning line instead of ending the crawl.

The walk: letter index pages -> artist pages -> album pages. The output, DIR/songs.jsonl, has
one song per line: artist, artist_slug, album, year, track, title, lyrics, url.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from atomlib.data.darklyrics import parse_album_page, parse_artist_page, parse_letter_index
from atomlib.data.fetcher import Fetcher, PageFailed, PageUnreadable, warn
from atomlib.errors import AtomError
from atomlib.paths import data_dir

DEFAULT_BASE_URL = "http://www.darklyrics.com"
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["19"]


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
            warn(f"{self.path} ended in a half-written line (an interrupted run); it was removed")

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
    """One run's walk over the site: counts what happened and turns fetch/parse trouble into
    one-line warnings, so one bad page never ends a crawl of hours."""

    def __init__(self, fetcher: Fetcher, progress: bool):
        self.fetcher, self.progress = fetcher, progress
        self.stats = {"artists": 0, "albums": 0, "songs": 0, "skipped": 0, "failed": 0}

    def parse(self, parser, url: str):
        """parser(page text, url), or None when the page is disallowed, failed or unreadable."""
        if not self.fetcher.allowed(url):
            warn(f"robots.txt disallows {url}; skipped")
            self.stats["skipped"] += 1
            return None
        try:
            return self.fetcher.get(url, parser)
        except PageFailed as e:
            warn(f"could not fetch {url}: {e}; skipped")
            self.stats["failed"] += 1
        except PageUnreadable as e:
            warn(f"could not parse {url} ({e}); skipped")
            self.stats["skipped"] += 1
        return None

    def artists(self, base: str, slugs: list[str], letters: list[str]) -> dict[str, tuple[str, str | None]]:
        """slug -> (artist page url, name on the index): the letter pages' links, then the slugs
        asked for by name."""
        todo: dict[str, tuple[str, str | None]] = {}
        for letter in letters:
            for a in self.parse(parse_letter_index, f"{base}/{letter}.html") or []:
                todo.setdefault(a["slug"], (a["url"], a["name"]))
        for slug in slugs:
            todo.setdefault(slug, (artist_url(base, slug), None))
        return todo

    def albums(self, todo: dict[str, tuple[str, str | None]]) -> list[tuple[str, str | None, dict]]:
        """(slug, artist name, album) for every album on the artist pages, so the album bar
        knows its total before the first album page is fetched."""
        albums = []
        for slug, (url, hint) in tqdm(todo.items(), desc="artists", unit="artist", disable=not self.progress):
            page = self.parse(parse_artist_page, url)
            if page is None:
                continue
            self.stats["artists"] += 1
            albums += [(slug, page["artist"] or hint, album) for album in page["albums"]]
        return albums

    def songs(self, albums: list[tuple[str, str | None, dict]], songs_file: SongsFile) -> None:
        """Album pages -> songs, appended album by album; albums already on disk are not fetched."""
        bar = tqdm(albums, desc="albums", unit="album", disable=not self.progress)
        for slug, name, album in bar:
            bar.set_postfix_str((name or slug)[:24], refresh=False)
            if album["url"] in songs_file.done_albums:
                self.stats["albums"] += 1  # on disk from an earlier run: nothing to fetch
                continue
            page = self.parse(parse_album_page, album["url"])
            if page is None:
                continue
            self.stats["songs"] += songs_file.append_album(_song_records(slug, name, album, page))
            self.stats["albums"] += 1
        bar.close()


def _song_records(slug: str, name: str | None, album: dict, page: dict) -> list[dict]:
    """The songs.jsonl lines of one album page. The artist page's title and year win (they are
    what the site lists); the album page, then the URL, fill what it lacks."""
    title = album["title"] or page["album"] or Path(urlsplit(album["url"]).path).stem
    year = album["year"] if album["year"] is not None else page["year"]
    return [{"artist": name or page["artist"] or slug, "artist_slug": slug,
             "album": title, "year": year, "track": s["track"], "title": s["title"],
             "lyrics": s["lyrics"], "url": s["url"]} for s in page["songs"]]


def _targets(artists, letters) -> tuple[list[str], list[str]]:
    """The artist slugs and index letters asked for, normalised; one of each may be a bare string."""
    artists = [artists] if isinstance(artists, str) else artists
    letters = [letters] if isinstance(letters, str) else letters
    slugs = [normalize_slug(a) for a in artists]
    letters = [normalize_letter(x) for x in letters]
    if not slugs and not letters:
        raise AtomError("scrape_darklyrics needs at least one artist slug or index letter.")
    return slugs, letters


def _open_songs(out_dir: Path) -> SongsFile:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return SongsFile(out_dir / "songs.jsonl")
    except OSError as e:
        raise AtomError(f"cannot write to {out_dir} ({e.strerror}); choose another folder with --out.") from None


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
    slugs, letters = _targets(artists, letters)
    out_dir = Path(out_dir) if out_dir is not None else data_dir("raw") / "darklyrics"
    cache_dir = Path(cache_dir) if cache_dir is not None else data_dir("raw") / "darklyrics" / "cache"

    fetcher = Fetcher(base, cache_dir, delay=delay, session=session, retries=retries, backoff=backoff, timeout=timeout)
    fetcher.load_robots()  # first request; ends the run with an AtomError when the site is unreachable
    crawl = _Crawl(fetcher, progress)
    songs_file = _open_songs(out_dir)
    crawl.songs(crawl.albums(crawl.artists(base, slugs, letters)), songs_file)
    return {**crawl.stats, "existing": songs_file.existing, "requests": fetcher.requests,
            "out": str(songs_file.path)}
