"""The public-domain corpus: a checked-in manifest, and `fetch` that makes the files appear.

Why a manifest: the dark-verse corpus (17 Project Gutenberg texts + tiny Shakespeare) must be
reproducible to the byte, yet nothing from it is committed. `data/sources.json` lists every work
with a URL pinned to a git commit, the sha256 of the bytes at that URL, the encoding they are
in, and the sha256 of the UTF-8 file we keep. So a download is checked twice (source bytes, then
our UTF-8 file), and a mirror folder (`../shared/corpus`, $ATOM_MIRROR) is just a faster way to
get the same bytes: both paths end in byte-identical files under data/raw/public_domain/.

The UTF-8 file is the source decoded with its listed encoding and nothing else changed: the
Project Gutenberg header, CRLF line endings and even a leading BOM are kept, because removing
them is the cleaner's job (atomlib.data.clean), with counts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.util.retry import Retry

from atomlib import __version__, paths
from atomlib.errors import AtomError

USER_AGENT = f"ATOM-GPT/{__version__} (atom fetch; public-domain corpus download)"
TIMEOUT = (10, 60)  # seconds: connect, read
RETRIES = 3


# --- the manifest ------------------------------------------------------------------------


def manifest_path() -> Path:
    return paths.data_dir() / "sources.json"


def load_manifest(path: str | Path | None = None) -> list[dict]:
    """The works listed in the manifest (default data/sources.json), each a dict with id, title,
    author, file, url, source_sha256, encoding, sha256, size (see the file's description)."""
    path = Path(path) if path is not None else manifest_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AtomError(f"manifest {path} does not exist; restore data/sources.json from git.") from None
    except (OSError, ValueError) as e:
        raise AtomError(f"manifest {path} is unreadable ({e}); restore data/sources.json from git.") from None
    works = data["works"] if isinstance(data, dict) else data
    for w in works:
        missing = {"file", "url", "sha256", "source_sha256", "encoding"} - set(w)
        if missing:
            raise AtomError(f"manifest {path}: entry {w.get('id', w.get('file', '?'))!r} lacks {sorted(missing)}; restore data/sources.json from git.")
        if Path(w["file"]).is_absolute() or ".." in Path(w["file"]).parts:
            raise AtomError(f"manifest {path}: file {w['file']!r} must be a relative path inside the output folder; fix the manifest.")
    return works


# --- small pure helpers ------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_utf8(source: bytes, encoding: str) -> bytes:
    """Source bytes in `encoding` -> UTF-8 bytes, nothing else changed (a UTF-8 BOM survives,
    since 'utf-8' decodes it to U+FEFF and encodes it back)."""
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        source.decode("utf-8")  # validate only: the bytes are already what we keep
        return source
    return source.decode(encoding).encode("utf-8")


def _short(h: str) -> str:
    return h[:12] + "…"


# --- getting one file --------------------------------------------------------------------


def make_session():
    """A requests session that names ATOM-GPT and retries transient failures with backoff."""
    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    retry = Retry(total=RETRIES, backoff_factor=1.0, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=("GET",), raise_on_status=False)
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.mount("https://", HTTPAdapter(max_retries=retry))
    return s


def _reason(e) -> str:
    """A short cause for a requests exception (its own message is a paragraph)."""
    if isinstance(e, requests.HTTPError) and e.response is not None:
        return f"HTTP {e.response.status_code}"
    if isinstance(e, requests.Timeout):
        return f"no answer within {TIMEOUT[1]} s"
    if isinstance(e, requests.ConnectionError):
        return "could not connect"
    return type(e).__name__


def download(work: dict, session) -> bytes:
    """The pinned URL's bytes, checked against source_sha256, decoded to the UTF-8 file's bytes."""
    name, url = work["file"], work["url"]
    try:
        r = session.get(url, timeout=TIMEOUT)
        r.raise_for_status()
    except requests.RequestException as e:
        raise AtomError(f"{name}: download of {url} failed ({_reason(e)}); "
                        "check the network, or pass --mirror DIR with a copy of the corpus.") from None
    got = sha256_bytes(r.content)
    if got != work["source_sha256"]:
        raise AtomError(f"{name}: sha256 mismatch of the download from {url} (got {_short(got)}, "
                        f"want {_short(work['source_sha256'])}); re-run atom fetch, or pass --mirror DIR.")
    try:
        return to_utf8(r.content, work["encoding"])
    except (UnicodeDecodeError, LookupError) as e:
        raise AtomError(f"{name}: cannot decode the download as {work['encoding']} ({e}); "
                        "fix the encoding in data/sources.json.") from None


def from_mirror(work: dict, mirror: Path) -> bytes | None:
    """The UTF-8 file from the mirror folder, or None when the mirror does not hold it."""
    src = mirror / work["file"]
    return src.read_bytes() if src.is_file() else None


def _resolve_mirror(mirror) -> Path | None:
    """mirror=False: never; a path: that folder (must exist); None: $ATOM_MIRROR or ../shared/corpus."""
    if mirror is False:
        return None
    if mirror is None:
        return paths.corpus_mirror()
    mirror = Path(mirror).expanduser()
    if not mirror.is_dir():
        raise AtomError(f"mirror folder {mirror} does not exist; pass the folder holding gutenberg/ "
                        "and tinyshakespeare/, or leave --mirror out to download.")
    return mirror


# --- the command -------------------------------------------------------------------------


def fetch(mirror=None, out_dir=None, progress=True, session=None, manifest=None) -> list[Path]:
    """Make every manifest file appear, verified, under `out_dir` (default data/raw/public_domain).

    Per file: skip it when it already exists with the right sha256; else copy it from the mirror
    (`mirror` arg, else $ATOM_MIRROR, else ../shared/corpus; `mirror=False` never uses one);
    else download the pinned URL. Every byte that lands is checked against the manifest and
    written atomically. The first failure raises AtomError naming the file; files done before it
    stay. Returns the output paths in manifest order.
    """
    works = load_manifest(manifest)
    out_dir = Path(out_dir) if out_dir is not None else paths.data_dir("raw") / "public_domain"
    mirror = _resolve_mirror(mirror)
    done, stats, own_session = [], {"verified": 0, "mirror": 0, "downloaded": 0}, session is None
    total = sum(int(w.get("size", 0)) for w in works) or None
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="fetch", disable=not progress)
    try:
        for w in works:
            name, dest = w["file"], out_dir / w["file"]
            bar.set_postfix_str(Path(name).name, refresh=False)
            if dest.is_file() and paths.sha256_file(dest) == w["sha256"]:
                how = "verified"
            else:
                data = from_mirror(w, mirror) if mirror is not None else None
                how = "mirror"
                if data is None:
                    session = session if session is not None else make_session()
                    data, how = download(w, session), "downloaded"
                got = sha256_bytes(data)
                if got != w["sha256"]:
                    fix = ("restore the mirror file, or run atom fetch --no-mirror to download it" if how == "mirror"
                           else "fix data/sources.json or re-run atom fetch")
                    where = f"mirror {mirror}" if how == "mirror" else w["url"]
                    raise AtomError(f"{name}: sha256 mismatch of the copy from {where} (got {_short(got)}, "
                                    f"want {_short(w['sha256'])}); {fix}.")
                paths.write_atomic(dest, data)
            stats[how] += 1
            done.append(dest)
            bar.update(int(w.get("size", 0)))
    finally:
        bar.close()
        if own_session and session is not None:
            session.close()
    if progress:
        print(f"fetch: {len(done)} files in {out_dir} ({stats['verified']} already verified, "
              f"{stats['mirror']} from mirror, {stats['downloaded']} downloaded)")
    return done
