"""atomlib.data.sources: the checked-in manifest, and `fetch` through its three paths (already
verified, mirror folder, download) against a real HTTP server on 127.0.0.1."""

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from atomlib import paths

from atomlib.data import sources
from atomlib.errors import AtomError

sha = lambda b: hashlib.sha256(b).hexdigest()

# Three small "works", one per encoding the real manifest uses.
LATIN1_TEXT = "The Project Gutenberg EBook of Beowulf\r\n\r\nÆschere, the well-lovèd; Hrothgar's hall.\r\n"
BOM_TEXT = "\ufeffProject Gutenberg's Manfred\r\n\r\nThe lamp must be replenish'd—but even then\r\n"
CP1252_TEXT = "Faustus\r\n\r\nWas this the face that launch’d a thousand ships?\r\n"
WORKS = [  # (file, the source bytes at the URL, encoding)
    ("gutenberg/beowulf.txt", LATIN1_TEXT.encode("iso-8859-1"), "iso-8859-1"),
    ("gutenberg/manfred.txt", BOM_TEXT.encode("utf-8"), "utf-8"),
    ("gutenberg/faustus.txt", CP1252_TEXT.encode("cp1252"), "cp1252"),
]
UTF8 = {"gutenberg/beowulf.txt": LATIN1_TEXT.encode(), "gutenberg/manfred.txt": BOM_TEXT.encode(),
        "gutenberg/faustus.txt": CP1252_TEXT.encode()}


class Server:
    """A tiny HTTP server on 127.0.0.1: path -> bytes (or a list of status codes to answer first)."""

    def __init__(self):
        self.routes, self.fail_first, self.requests = {}, {}, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("User-Agent", "")))
                pending = outer.fail_first.get(self.path)
                if pending:
                    self.send_response(pending.pop(0))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = outer.routes.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def make_manifest(tmp_path, server, works=WORKS):
    entries = []
    for file, data, enc in works:
        route = "/pinned/" + file.split("/")[-1]
        server.routes[route] = data
        utf8 = data.decode(enc).encode("utf-8")
        entries.append({"id": file.split("/")[-1][:-4], "source": "gutenberg", "title": file, "author": "test",
                        "file": file, "url": server.url + route, "source_sha256": sha(data), "source_size": len(data),
                        "encoding": enc, "sha256": sha(utf8), "size": len(utf8)})
    path = tmp_path / "sources.json"
    path.write_text(json.dumps({"works": entries}), encoding="utf-8")
    return path


# --- download ---------------------------------------------------------------------------------


def test_download_decodes_each_encoding_to_the_mirror_bytes(tmp_path, server):
    manifest = make_manifest(tmp_path, server)
    out = tmp_path / "raw"
    got = sources.fetch(mirror=False, out_dir=out, progress=False, manifest=manifest)
    assert got == [out / f for f, _, _ in WORKS]
    for f, want in UTF8.items():
        assert (out / f).read_bytes() == want  # byte-identical to the mirror file, BOM and CRLF kept
    assert (out / "gutenberg/manfred.txt").read_bytes().startswith(b"\xef\xbb\xbf")
    assert len(server.requests) == 3
    assert all("ATOM-GPT" in ua for _, ua in server.requests)
    assert not list(out.rglob(".tmp-*"))  # no temporary file of paths.atomic_file left


def test_skip_when_already_verified_and_refetch_a_bad_copy(tmp_path, server):
    manifest = make_manifest(tmp_path, server)
    out = tmp_path / "raw"
    sources.fetch(mirror=False, out_dir=out, progress=False, manifest=manifest)
    n = len(server.requests)
    mtimes = {f: (out / f).stat().st_mtime_ns for f in UTF8}
    sources.fetch(mirror=False, out_dir=out, progress=False, manifest=manifest)
    assert len(server.requests) == n  # nothing downloaded again
    assert {f: (out / f).stat().st_mtime_ns for f in UTF8} == mtimes
    (out / "gutenberg/faustus.txt").write_text("truncated")
    sources.fetch(mirror=False, out_dir=out, progress=False, manifest=manifest)
    assert len(server.requests) == n + 1
    assert (out / "gutenberg/faustus.txt").read_bytes() == UTF8["gutenberg/faustus.txt"]


def test_corrupted_download_names_the_file_and_keeps_earlier_files(tmp_path, server):
    manifest = make_manifest(tmp_path, server)
    server.routes["/pinned/manfred.txt"] = BOM_TEXT.encode("utf-8").replace(b"lamp", b"LAMP")
    out = tmp_path / "raw"
    with pytest.raises(AtomError, match=r"gutenberg/manfred.txt: sha256 mismatch .*got [0-9a-f]+…, want [0-9a-f]+…"):
        sources.fetch(mirror=False, out_dir=out, progress=False, manifest=manifest)
    assert (out / "gutenberg/beowulf.txt").read_bytes() == UTF8["gutenberg/beowulf.txt"]  # earlier file stays
    assert not (out / "gutenberg/manfred.txt").exists()  # nothing half-written
    assert not (out / "gutenberg/faustus.txt").exists()  # stopped at the failure
    assert not list(out.rglob(".tmp-*"))  # no temporary file of paths.atomic_file left


def test_http_errors_retry_then_fail_with_the_file_name(tmp_path, server):
    manifest = make_manifest(tmp_path, server)
    server.fail_first["/pinned/beowulf.txt"] = [503]  # one transient error: the retry gets the file
    out = tmp_path / "raw"
    sources.fetch(mirror=False, out_dir=out, progress=False, manifest=manifest)
    assert [p for p, _ in server.requests].count("/pinned/beowulf.txt") == 2
    del server.routes["/pinned/faustus.txt"]
    (out / "gutenberg/faustus.txt").unlink()
    with pytest.raises(AtomError, match=r"gutenberg/faustus.txt: download of .* failed \(HTTP 404\)"):
        sources.fetch(mirror=False, out_dir=out, progress=False, manifest=manifest)


# --- mirror -----------------------------------------------------------------------------------


def _mirror(tmp_path):
    mirror = tmp_path / "mirror"
    for f, data in UTF8.items():
        (mirror / f).parent.mkdir(parents=True, exist_ok=True)
        (mirror / f).write_bytes(data)
    return mirror


class NoNetwork:
    def get(self, *a, **k):
        raise AssertionError("the mirror path must not touch the network")


def test_mirror_copies_without_network(tmp_path, server, monkeypatch):
    manifest = make_manifest(tmp_path, server)
    mirror = _mirror(tmp_path)
    out = tmp_path / "raw"
    sources.fetch(mirror=mirror, out_dir=out, progress=False, session=NoNetwork(), manifest=manifest)
    assert {f: (out / f).read_bytes() for f in UTF8} == UTF8
    # $ATOM_MIRROR is used when no mirror is passed
    monkeypatch.setenv("ATOM_MIRROR", str(mirror))
    out2 = tmp_path / "raw2"
    sources.fetch(out_dir=out2, progress=False, session=NoNetwork(), manifest=manifest)
    assert {f: (out2 / f).read_bytes() for f in UTF8} == UTF8
    assert server.requests == []


def test_mirror_missing_file_is_downloaded_and_bad_file_is_an_error(tmp_path, server):
    manifest = make_manifest(tmp_path, server)
    mirror = _mirror(tmp_path)
    (mirror / "gutenberg/beowulf.txt").unlink()
    out = tmp_path / "raw"
    sources.fetch(mirror=mirror, out_dir=out, progress=False, manifest=manifest)
    assert [p for p, _ in server.requests] == ["/pinned/beowulf.txt"]
    (mirror / "gutenberg/faustus.txt").write_bytes(b"not the text")
    (out / "gutenberg/faustus.txt").unlink()
    with pytest.raises(AtomError, match=r"gutenberg/faustus.txt: sha256 mismatch .*mirror"):
        sources.fetch(mirror=mirror, out_dir=out, progress=False, manifest=manifest)
    with pytest.raises(AtomError, match="does not exist"):
        sources.fetch(mirror=tmp_path / "nope", out_dir=out, progress=False, manifest=manifest)


def test_cli_fetch(tmp_path, server, capsys):
    from atomlib.cli import main

    manifest = make_manifest(tmp_path, server)
    out = tmp_path / "raw"
    assert main(["fetch", "--no-mirror", "--manifest", str(manifest), "--out", str(out)]) == 0
    assert "3 downloaded" in capsys.readouterr().out
    assert main(["fetch", "--mirror", str(tmp_path), "--no-mirror", "--manifest", str(manifest)]) == 2
    assert "atom fetch: error:" in capsys.readouterr().err


def test_bad_manifest_is_an_atom_error(tmp_path):
    with pytest.raises(AtomError, match="does not exist"):
        sources.load_manifest(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"works": [{"id": "x", "file": "../escape.txt", "url": "u", "sha256": "0",
                                          "source_sha256": "0", "encoding": "utf-8"}]}))
    with pytest.raises(AtomError, match="relative path"):
        sources.load_manifest(bad)


# --- the real manifest ---------------------------------------------------------------------------


def test_real_manifest_entries():
    works = sources.load_manifest()
    assert len(works) == 18
    assert len({w["id"] for w in works}) == 18 and len({w["file"] for w in works}) == 18
    pinned = re.compile(r"https://raw\.githubusercontent\.com/(GITenberg/[^/]+|karpathy/char-rnn)/[0-9a-f]{40}/\S+$")
    for w in works:
        assert pinned.match(w["url"]), w["url"]
        assert w["encoding"] in ("utf-8", "iso-8859-1", "cp1252")
        assert re.fullmatch(r"[0-9a-f]{64}", w["sha256"]) and re.fullmatch(r"[0-9a-f]{64}", w["source_sha256"])
        assert w["title"] and w["author"] and w["size"] > 0
        assert (w["encoding"] == "utf-8") == (w["sha256"] == w["source_sha256"])
    assert sum(w["size"] for w in works) == 9849595
    assert "BOM" in next(w for w in works if w["id"] == "byron_works_vol4_manfred_darkness")["note"]


def test_real_manifest_matches_the_mirror():
    mirror = paths.corpus_mirror()
    if mirror is None or not (mirror / "gutenberg").is_dir():
        pytest.skip("offline corpus mirror not found (set ATOM_MIRROR)")
    for w in sources.load_manifest():
        data = (mirror / w["file"]).read_bytes()
        assert sha(data) == w["sha256"] and len(data) == w["size"], w["file"]
        # the source bytes are the mirror text in the listed encoding: what a download would check
        assert sha(data.decode("utf-8").encode(w["encoding"])) == w["source_sha256"], w["file"]
