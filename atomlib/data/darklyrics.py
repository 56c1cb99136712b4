"""Reading DarkLyrics pages: pure functions from a page's HTML to plain data.

The parsers read the site as it really is (and as it varies): titles with or without quotes or
a year, songs whose lines are split by <br>, <p> or nested blocks, ads and credit blocks between
them. Each raises ParseError when a page lacks what it needs (an error page sent with status
200, say), so the crawl (atomlib.data.scrape) skips that page instead of caching it.

The site, as walked here:

    BASE/a.html                      letter index: <a href="a/amonamarth.html">AMON AMARTH</a>
    BASE/a/amonamarth.html           artist page: <h1>AMON AMARTH LYRICS</h1>, then per album
                                     <div class="album"><h2>album: <strong>"Title"</strong> (2004)</h2>
                                     <a href="../lyrics/amonamarth/title.html#1">Song</a><br /> ...
    BASE/lyrics/amonamarth/title.html  album page: <div class="lyrics"><h3><a name="1">1. Song</a></h3>
                                     <br />line<br />line<br /><br />line ... <div class="thanks">

Artists whose slug starts with a digit live under BASE/19/.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup, NavigableString, Tag

from atomlib.data.fetcher import same_site


class ParseError(ValueError):
    """A page does not look like the page we expected; the crawl skips it."""


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
        if not m or path[:m.start()] != root or not same_site(url, base_url):
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
        if not _LYRICS_PATH.search(urlsplit(album_url).path) or not same_site(album_url, page_url):
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
