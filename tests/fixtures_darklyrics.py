"""A small fake DarkLyrics site and a threaded HTTP server for it, on 127.0.0.1 only.

The pages mirror the real site's markup (letter index -> artist page -> album page) and carry
the edge cases the scraper must survive: missing year, missing quotes, parentheses inside a
quoted title, instrumental tracks, non-ASCII names, HTML entities, <i> annotations, <br> vs
<br />, <a name> vs <a id>, extra wrapper divs, thanks/note blocks, a digit-slug artist under
/19/, an album disallowed by robots.txt, an unparsable page and a dead link. The lyrics are
invented here (real ones are copyrighted).

`SITE` is the source of truth: tests compare what the scraper writes with `expected_songs()`.
The server logs every request (path, User-Agent) and can be told to answer a path with errors
(429 + Retry-After, 503, a redirect, an error page sent as 200, a slow, trickled or malformed
answer) before serving it normally.
"""

from __future__ import annotations

import html
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --- the site's content ---------------------------------------------------------------------
# artist: slug, name (as the site shows it, upper case), letter, albums
# album:  slug, title, year, header (how the <h2> is written), style options, songs
# song:   (title, lyrics as the scraper should write them, optional raw HTML body)

SITE = [
    {"slug": "amonamarth", "name": "AMON AMARTH", "albums": [
        {"slug": "twilightofthethundergod", "title": "Twilight Of The Thunder God", "year": 2008,
         "header": 'album: <strong>"Twilight Of The Thunder God"</strong> (2008)', "songs": [
            ("Twilight Of The Thunder God",
             "Hammer raised against the grey\nThunder rolls across the bay\n\n"
             "[Chorus:]\nRide on, ride on\nInto the storm (x2)",
             'Hammer raised against the grey<br />\nThunder rolls across the bay<br />\n<br />\n'
             '<i>[Chorus:]</i><br />\nRide on, ride on<br />\nInto the storm <i>(x2)</i><br />\n'),
            ("Guardians &amp; Giants",  # a title with an entity; text below has &#39; &quot; &amp;
             "We don't kneel & we don't bow\nThey call it \"fate\" but we say now",
             "We don&#39;t kneel &amp; we don&#39;t bow<br />\nThey call it &quot;fate&quot; but we say now<br />\n"),
            ("Where Is Your God?",
             "Cold wind, iron sky\nNo one hears the ravens cry\n\nAsh and ember\nEnd of days", None),
         ]},
        {"slug": "sorrowthroughoutheninewords", "title": "Sorrow Throughout The Nine Worlds", "year": None,
         "header": 'EP: <strong>"Sorrow Throughout The Nine Worlds"</strong>', "songs": [  # no year
            ("Sorrow Throughout The Nine Worlds", "Nine worlds weeping\nUnder the ash tree", None),
         ]},
        {"slug": "oncesentfromthegoldenhall", "title": "Once Sent From The Golden Hall", "year": 1998,
         "header": "album: Once Sent From The Golden Hall (1998)", "songs": [  # no quotes
            ("Ride For Vengeance", "Horses of steel\nRiders of night", None),
            ("Amon Amarth (Outro)", "", ""),  # empty instrumental
         ]},
    ]},
    {"slug": "arcturus", "name": "ARCTURUS", "albums": [
        {"slug": "lasciviousgrandiose", "title": "La Masquerade Infernale", "year": 1997,
         "header": 'album: <strong>"La Masquerade Infernale"</strong> (1997)', "songs": [
            ("Master Of Disguise", "Masks upon masks\nA carnival of stars", None),
         ]},
        # a page with no song headings (unparsable) and a dead link (404)
        {"slug": "broken", "title": "Broken", "year": 2002, "header": 'album: <strong>"Broken"</strong> (2002)',
         "songs": [("X", "x", None)], "unparsable": True},
        {"slug": "gone", "title": "Gone", "year": 2005, "header": 'album: <strong>"Gone"</strong> (2005)',
         "songs": [("Y", "y", None)], "missing": True},
    ]},
    {"slug": "motleycrue", "name": "MÖTLEY CRÜE", "albums": [
        {"slug": "toofastforlove", "title": "Too Fast For Love (Remastered)", "year": 1981,
         "header": 'album: <strong>"Too Fast For Love (Remastered)"</strong> (1981)',
         "style": {"br": "<br>", "anchor": "id", "wrap": True, "charset": "meta"}, "songs": [
            ("Live Wire", "Crüe on the wire, smörgåsbord of fire\nÜber alles, ça va\n\nNaïve and wild",
             "Crüe on the wire, smörgåsbord of fire<br>\n   Über alles,   ça va <br>\n<br>\n"
             "<div>Naïve and&nbsp;wild</div>\n"),
            ("Piece Of Your Action", "[Instrumental]", None),
         ]},
    ]},
    {"slug": "dimmuborgir", "name": "DIMMU BORGIR", "albums": [
        {"slug": "puritanicaleuphoricmisanthropia", "title": "Puritanical Euphoric Misanthropia", "year": 2001,
         "header": 'album: <strong>"Puritanical Euphoric Misanthropia"</strong> (2001)', "songs": [
            ("Fear And Wonder", "[Instrumental]", "<i>[Instrumental]</i><br />\n"),
            ("Blessings Upon The Throne Of Tyranny", "Throne of stone\nCrown of bone", None),
            ("Kings Of The Carnival Creation", "The carnival turns\nThe carnival burns", None),
         ]},
        {"slug": "stormblast", "title": "Stormblåst", "year": 1996,  # disallowed by robots.txt
         "header": 'album: <strong>"Stormblåst"</strong> (1996)', "songs": [("Alt Lys Er Svunnet Hen", "x", None)]},
    ]},
    {"slug": "1349", "name": "1349", "albums": [
        {"slug": "hellfire", "title": "Hellfire", "year": 2005,
         "header": 'album: <strong>"Hellfire"</strong> (2005)', "songs": [
            ("I Am Abomination", "Fire below\nFire above", None),
         ]},
    ]},
]

ROBOTS_TXT = "User-agent: *\nDisallow: /lyrics/dimmuborgir/stormblast.html\nDisallow: /cgi-bin/\n"
THANKS = ('<div class="thanks">Thanks to grimreaper for sending these lyrics.<br />\n'
          'Thanks to nightwolf for correcting track #2 lyrics.</div>\n'
          '<div class="note">Submits, comments, corrections are welcomed at www.darklyrics.com/submit.html</div>\n')


def letter_of(slug: str) -> str:
    return slug[0] if slug[0].isalpha() else "19"


def _text(s: str) -> str:
    """Fixture strings may already hold entities (&amp;); plain characters are escaped."""
    return s if "&" in s else html.escape(s, quote=False)


def _page(title: str, body: str, charset_meta: bool = True) -> str:
    meta = '<meta http-equiv="Content-Type" content="text/html; charset=utf-8" />' if charset_meta else ""
    nav = " ".join(f'<a href="/{x}.html">{x.upper() if x != "19" else "#"}</a>'
                   for x in [*map(chr, range(97, 123)), "19"])
    return (f"<!DOCTYPE html>\n<html>\n<head>{meta}<title>{title}</title>\n"
            "<script type=\"text/javascript\">var ad = '<br />not lyrics<br />';</script></head>\n"
            f'<body>\n<div class="wrapper">\n<div class="listrow">{nav}</div>\n'
            f'<div class="cont">\n{body}</div>\n<div class="footer">DarkLyrics.com</div>\n</div>\n</body>\n</html>\n')


def letter_page(letter: str, artists: list[dict]) -> str:
    links = "".join(f'<a href="{letter}/{a["slug"]}.html">{a["name"]}</a><br />\n' for a in artists)
    return _page(f"{letter.upper()} - DarkLyrics.com",
                 f'<h1>{letter.upper()}</h1>\n<div class="artists fl">\n{links}</div>\n'
                 '<div class="artists fr">\n</div>\n<a href="../about.html">About</a>\n')


def artist_page(artist: dict) -> str:
    blocks = []
    for album in artist["albums"]:
        links = "".join(f'<a href="../lyrics/{artist["slug"]}/{album["slug"]}.html#{n}">{_text(t)}</a><br />\n'
                        for n, (t, _, _) in enumerate(album["songs"], 1))
        blocks.append(f'<div class="album">\n<h2>{album["header"]}</h2>\n'
                      f'<div class="albumcover"><img src="../covers/{album["slug"]}.jpg" alt="" /></div>\n'
                      f'{links}<br />\n</div>\n')
    return _page(f'{artist["name"]} lyrics', f'<h1>{artist["name"]} LYRICS</h1>\n'
                 '<div class="artist-info">Genre: Metal</div>\n' + "".join(blocks))


def song_body(lyrics: str, br: str = "<br />") -> str:
    """Lyrics text -> the site's markup: one <br /> per line, an empty line between stanzas."""
    return "".join(f"{_text(line)}{br}\n" for line in lyrics.split("\n")) if lyrics else ""


def album_page(artist: dict, album: dict) -> str:
    style = album.get("style", {})
    br, anchor = style.get("br", "<br />"), style.get("anchor", "name")
    tracklist = "".join(f'<a href="#{n}">{n}. {_text(t)}</a>{br}\n' for n, (t, _, _) in enumerate(album["songs"], 1))
    head = (f'<h1><a href="../../{letter_of(artist["slug"])}/{artist["slug"]}.html">{artist["name"]} LYRICS</a></h1>\n'
            f'<div class="albumlyrics">\n<h2>{album["header"]}</h2>\n{tracklist}</div>\n')
    if album.get("unparsable"):
        return _page("oops", head + '<div class="lyrics">\nLyrics are being updated.\n</div>\n')
    songs = []
    for n, (title, lyrics, body) in enumerate(album["songs"], 1):
        text = body if body is not None else song_body(lyrics, br)
        song = f'<h3><a {anchor}="{n}">{n}. {_text(title)}</a></h3>{br}\n{text}{br}\n{br}\n'
        songs.append(f'<div class="song">\n{song}</div>\n' if style.get("wrap") else song)
    return _page(f'{artist["name"]} - {album["title"]}', head + '<div class="lyrics">\n<!-- lyrics start -->\n' + "".join(songs)
                 + THANKS + "</div>\n", charset_meta=style.get("charset") == "meta")


def build_site(artists=SITE) -> dict[str, tuple[bytes, str]]:
    """path -> (body, content type) for every page of the fake site (or of a site of these artists)."""
    pages = {"/robots.txt": (ROBOTS_TXT.encode(), "text/plain")}
    by_letter: dict[str, list] = {}
    for artist in artists:
        by_letter.setdefault(letter_of(artist["slug"]), []).append(artist)
        pages[f'/{letter_of(artist["slug"])}/{artist["slug"]}.html'] = (artist_page(artist).encode(), "text/html; charset=utf-8")
        for album in artist["albums"]:
            if album.get("missing"):
                continue
            ctype = "text/html" if album.get("style", {}).get("charset") == "meta" else "text/html; charset=utf-8"
            pages[f'/lyrics/{artist["slug"]}/{album["slug"]}.html'] = (album_page(artist, album).encode(), ctype)
    for letter, listed in by_letter.items():
        pages[f"/{letter}.html"] = (letter_page(letter, listed).encode(), "text/html; charset=utf-8")
    return pages


def expected_songs(base_url: str, slugs, artists=SITE) -> list[dict]:
    """The songs.jsonl records the scraper should write for these artists, in crawl order."""
    out = []
    for artist in (a for s in slugs for a in artists if a["slug"] == s):
        for album in artist["albums"]:
            if album.get("unparsable") or album.get("missing") or album["slug"] == "stormblast":
                continue
            for n, (title, lyrics, _) in enumerate(album["songs"], 1):
                out.append({"artist": artist["name"], "artist_slug": artist["slug"], "album": album["title"],
                            "year": album["year"], "track": n, "title": html.unescape(title), "lyrics": lyrics,
                            "url": f'{base_url}/lyrics/{artist["slug"]}/{album["slug"]}.html#{n}'})
    return out


# --- the server -----------------------------------------------------------------------------


class FixtureServer:
    """Serves pages from a dict on 127.0.0.1:<free port>, in a background thread.

    requests: list of (path, user_agent) in arrival order.
    fail(path, *answers): answer `path` with these first, then serve it normally. An answer is
    (status, headers) with the body "error", (status, headers, body), ("slow", seconds) for a
    delayed normal answer, ("trickle", seconds, n) for a 200 whose n body bytes come one per
    `seconds`, ("trickle_head", seconds, n) for a status line and n headers that come a byte per
    `seconds`, or ("raw", bytes) for bytes written as they are (not HTTP) before hanging up.
    """

    def __init__(self, pages: dict | None = None):
        self.pages = build_site() if pages is None else pages
        self.requests: list[tuple[str, str]] = []
        self.scripts: dict[str, list] = {}
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def fail(self, path: str, *answers):
        with self._lock:
            self.scripts.setdefault(path, []).extend(answers)

    def paths(self) -> list[str]:
        with self._lock:
            return [p for p, _ in self.requests]

    def _next_answer(self, path: str, user_agent: str):
        with self._lock:
            self.requests.append((path, user_agent))
            queue = self.scripts.get(path)
            return queue.pop(0) if queue else None

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between header and body

            def handle(self):
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):  # the client hung up (a page it refused)
                    pass

            def do_GET(self):
                path = self.path.split("?")[0]
                answer = server._next_answer(path, self.headers.get("User-Agent", ""))
                if answer is not None and answer[0] == "slow":
                    time.sleep(answer[1])
                elif answer is not None and answer[0] == "trickle":
                    return self._trickle(*answer[1:])
                elif answer is not None and answer[0] == "trickle_head":
                    return self._trickle_head(*answer[1:])
                elif answer is not None and answer[0] == "raw":
                    self.close_connection = True
                    return self.wfile.write(answer[1])
                elif answer is not None:
                    body = answer[2] if len(answer) > 2 else b"error\n"
                    return self._send(answer[0], body, "text/html" if len(answer) > 2 else "text/plain", answer[1])
                if path not in server.pages:
                    return self._send(404, b"<h1>Not found</h1>", "text/html", {})
                body, ctype = server.pages[path]
                self._send(200, body, ctype, {})

            def _send(self, status, body, ctype, headers):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def _trickle(self, seconds, n):
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(n))
                    self.end_headers()
                    for _ in range(n):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(seconds)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up
                    pass

            def _trickle_head(self, seconds, n):
                """A status line and headers that come one byte per `seconds` (n filler headers)."""
                head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Filler-%d: x\r\n" % i for i in range(n))
                self.close_connection = True
                try:
                    for i in range(len(head)):
                        self.wfile.write(head[i:i + 1])
                        self.wfile.flush()
                        time.sleep(seconds)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up
                    pass

            def log_message(self, *args):  # keep test output clean
                pass

        return Handler

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":  # browse the fake site by hand: python -m tests.fixtures_darklyrics
    with FixtureServer() as s:
        print(f"serving the fixture site at {s.base_url} (Ctrl-C to stop)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
