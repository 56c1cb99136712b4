"""atomlib.data.clean with its rules (text_rules, lyric_rules), dedup and documents: every rule
family on hand-made text with known answers (what goes AND what stays), document-level dedup, the
inputs it reads, the report it writes, and a run over real Project Gutenberg files from the
offline mirror."""

import json
from pathlib import Path

import pytest

from atomlib.data import clean as C, dedup, lyric_rules, setup as data_setup, text_rules, views
from atomlib import paths
from atomlib.errors import AtomError

# Verse that looks a little like noise and must come through every rule untouched.
VERSE = [
    "By the river of blood we stand",
    "Music of the spheres is silent now",
    "The words of the dead are carved in stone",
    "Thanks to the night for hiding me",
    "Thanks to the night for sending me home",
    "[she whispered]",
    "(and the sky wept)",
    "[_Exit Mephistopheles._]",
    "Chorus of the damned, sing!",
    "Bridge of sighs, the verse of pain",
    "Words: they cut like knives",
    "Lyrics by candlelight, music by the sea",
    "music by the river, words by the fire",
    "Written in 1349, the year of the plague",
    "Seven seals and 666 names",
    "Break",
    "I <3 the dark, and 3 < 4 > 2",
    "Track the beast through the snow",
    "Title of kings, crown of thorns",
    "single: your abilities are too infant-like",
    "      words:",
    "We are the storm, x marks the grave",
    "Malcolm X",
    "Picture this: a burning sky",
    "End of the line, end of the world",
    "The words are unknown.",
    "At 4:57 the clock stopped",
    "1. I will rise again",
    "Send me to the grave",
    'She said: "Come" (and I came)',
    "If you find my errors, forgive me",
]



# --- the rule table ------------------------------------------------------------------------


def test_rules_are_an_ordered_table_of_named_functions():
    names = [r.name for r in C.RULES]
    assert names == ["html_tags_entities", "unicode_whitespace", "gutenberg_header_footer", "placeholders",
                     "section_repeat_markers", "metadata_lines", "credits", "track_durations", "track_headings",
                     "album_headers", "correction_requests", "urls_emails", "numeric_noise", "leading_indentation"]
    assert C.RULE_NAMES == names + ["duplicates"]
    assert [row["rule"] for row in C.rules_table()] == C.RULE_NAMES
    for r in C.RULES:
        out = r.fn("plain verse line\nanother line")
        assert out == ("plain verse line\nanother line", 0), r.name


@pytest.mark.parametrize("line", VERSE)
def test_verse_survives_every_rule(line):
    text = f"Into the night we ride\n{line}\nAnd the dead ride with us"
    out, counts = C.clean_text(text)
    # every word and line break stays; only an indented line loses its left margin
    assert out == text.replace(line, line.lstrip()), (line, counts)
    assert sum(counts.values()) == (line != line.lstrip())
    assert counts["leading_indentation"] == (line != line.lstrip())


# --- HTML ------------------------------------------------------------------------------------


def test_html_tags_and_entities():
    text, n = text_rules.html_tags_entities("&amp; the night &#39;falls&#39;<br>and <i>rises</i><br/>again&nbsp;now")
    assert text == "& the night 'falls'\nand rises\nagain\u00a0now"
    assert n == 2 + 2 + 3 + 1  # two breaks, <i> </i>, three entities + &nbsp;
    assert text_rules.html_tags_entities('<a href="http://x.org">link</a> <p>para</p>')[0] == "link para\n"


def test_html_leaves_comparisons_and_unknown_entities():
    for s in ["I <3 you", "3 < 4 and 5 > 2", "AT&T & friends", "&notanentity;"]:
        assert text_rules.html_tags_entities(s) == (s, 0)


# --- whitespace and Unicode -----------------------------------------------------------------


def test_unicode_whitespace():
    raw = "\ufeffLine one  \r\nLine\u00a0two\u2009ok\r\nzero\u200bwidth\u200d\r\n\r\n\r\n\r\nCafe\u0301 \t\n"
    text, n = text_rules.unicode_whitespace(raw)
    assert text == "Line one\nLine two ok\nzerowidth\n\nCafé\n"
    assert "\r" not in text and "\ufeff" not in text and "\u200b" not in text
    assert n >= 10  # BOM, 2 spaces, zero-widths, 6 CRs, NFC, trailing spaces, one newline run


def test_unicode_whitespace_keeps_indentation_and_single_blank_lines():
    s = "  indented verse\n\tand a tab\n\nnext stanza"
    assert text_rules.unicode_whitespace(s) == (s, 0)


def test_clean_text_leaves_no_trailing_space_or_blank_runs():
    out, _ = C.clean_text("a   \n\n\n\n[Chorus]\n\n\nb  \n\n")
    assert out == "a\n\nb"


# --- Project Gutenberg -----------------------------------------------------------------------

PG = """\ufeffThe Project Gutenberg EBook of Dark Songs, by Ann Author\r
\r
This eBook is for the use of anyone anywhere at no cost.\r
\r
Title: Dark Songs\r
\r
Author: Ann Author\r
\r
*** START OF THIS PROJECT GUTENBERG EBOOK DARK SONGS ***\r
\r
Produced by Some Volunteer and the Online Distributed\r
Proofreading Team at http://www.pgdp.net\r
\r
THE RAVEN'S SONG\r
\r
Once upon a midnight dreary,\r
While the end of the world drew near.\r
\r
End of the Project Gutenberg EBook of Dark Songs, by Ann Author\r
\r
*** END OF THIS PROJECT GUTENBERG EBOOK DARK SONGS ***\r
\r
***** This file should be named 1234.txt or 1234.zip *****\r
Updated editions will replace the previous one.\r
"""


def test_gutenberg_header_footer_modern():
    text, n = C.clean_text(PG)
    assert text == "THE RAVEN'S SONG\n\nOnce upon a midnight dreary,\nWhile the end of the world drew near."
    assert n["gutenberg_header_footer"] == 3  # header, footer, "Produced by" paragraph


def test_gutenberg_old_styles():
    old = ("**The Project Gutenberg Etext of Old Verse**\n\nSmall print and legal words.\n"
           "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\n"
           "The grave is cold and the night is long.\n\n"
           "End of The Project Gutenberg Etext of Old Verse\n")
    text, n = text_rules.gutenberg_header_footer(old)
    assert text.strip() == "The grave is cold and the night is long."
    assert n == 2
    only_end = "A dirge for the dead.\n\nEnd of Project Gutenberg's Dirges, by Nobody\n\nlicence text"
    assert text_rules.gutenberg_header_footer(only_end) == ("A dirge for the dead.", 1)
    variant = "header\n***START OF THE PROJECT GUTENBERG EBOOK X***\nverse\n***END OF THE PROJECT GUTENBERG EBOOK X***\nlicence"
    assert text_rules.gutenberg_header_footer(variant)[0] == "verse"


def test_gutenberg_leaves_other_texts_alone():
    for s in ["The end of the project was near\nAnd gutenberg presses rolled", "Start of the end\nEnd of the start"]:
        assert text_rules.gutenberg_header_footer(s) == (s, 0)


def test_gutenberg_meta():
    assert text_rules.gutenberg_meta(PG) == {"title": "Dark Songs", "author": "Ann Author"}
    assert text_rules.gutenberg_meta("The Project Gutenberg EBook of Odes, by Jo Poet\n\nstuff") == {"title": "Odes", "author": "Jo Poet"}
    assert text_rules.gutenberg_meta("no header here") == {}


# --- placeholders ----------------------------------------------------------------------------


@pytest.mark.parametrize("noise", [
    "[Instrumental]", "(instrumental)", "Instrumental", "- Instrumental -", "[Instrumental - 4:33]",
    "[Lyrics not available]", "(Lyrics unavailable)", "Lyrics not available yet.", "[no lyrics]", "No lyrics",
    "[Illustration]", "[illustration]", "[Illustration: Faust]", "[Illustration: _The raven,\nperched upon a bust_]",
    "[Illustration 3]", "[?]", "[unintelligible]",
])
def test_placeholders_removed(noise):
    text, n = lyric_rules.placeholders(f"first line\n{noise}\nlast line")
    assert (text, n) == ("first line\nlast line", 1)


def test_placeholders_inline_and_kept():
    assert lyric_rules.placeholders("the [?] night") == ("the night", 1)
    for s in ["(picture this)", "[Picture this]", "Instrumental in my demise", "The words are unknown.", "[she whispered]"]:
        assert lyric_rules.placeholders(s) == (s, 0)


# --- section and repeat markers ---------------------------------------------------------------


@pytest.mark.parametrize("marker", [
    "[Chorus]", "(Chorus)", "Chorus:", "CHORUS", "*Chorus*", "[Chorus x2]", "Chorus (x2)", "Chorus x2",
    "[Verse 2]", "Verse 1:", "[Verse 2: Ozzy]", "VERSE II", "2nd Verse:", "[Pre-Chorus]", "[Bridge]", "Bridge:",
    "[Intro]", "Outro:", "[Outro - fade out]", "[Guitar Solo: Kirk Hammett]", "Solo", "[Hook]", "[Refrain]",
    "[Spoken]", "(spoken)", "(x2)", "[x3]", "x4", "2x", "(repeat)", "Repeat", "Repeat x2", "Repeat chorus",
    "(Repeat chorus x2)", "Repeat 1st verse", "(3 times)", "(twice)",
])
def test_section_markers_removed(marker):
    text, n = lyric_rules.section_repeat_markers(f"the first line\n{marker}\nthe last line")
    assert (text, n) == ("the first line\nthe last line", 1)


@pytest.mark.parametrize("line,want", [
    ("Burn the sky (x2)", "Burn the sky"), ("Burn the sky x2", "Burn the sky"), ("Burn [x3]", "Burn"),
    ("Burn the sky (repeat)", "Burn the sky"), ("Burn (2x) again", "Burn again"), ("(x2) Burn", "Burn"),
])
def test_repeat_counts_after_a_line(line, want):
    assert lyric_rules.section_repeat_markers(line) == (want, 1)


def test_section_words_inside_verse_stay():
    for s in ["Chorus of the damned", "Bridge of sighs", "Hook me up", "The refrain of the dead", "Verse of blood",
              "Break", "[she whispered]", "Malcolm X", "x marks the grave", "Intro to the void we fall"]:
        assert lyric_rules.section_repeat_markers(s) == (s, 0), s


# --- metadata lines ----------------------------------------------------------------------------


@pytest.mark.parametrize("meta", [
    "Artist: Death", "ALBUM: Human", "Album: Into the Void (1999)", "Band: Bathory", "Year: 1991", "Released: 1991",
    "Genre: Death Metal", "Label: Roadrunner", "Title: Black Rain", "Track 3", "Track 03: Lack of Comprehension",
    "Track #7 - Suicide Machine", "Track 3 of 10", "CD 2", "Disc 1: The Dark", "[Year: 1991]", "Length: 4:33",
])
def test_metadata_lines_removed(meta):
    assert lyric_rules.metadata_lines(f"a verse\n{meta}\nanother verse") == ("a verse\nanother verse", 1)


def test_metadata_shapes_inside_verse_stay():
    for s in ["single: your abilities are too infant-like", "song:--long it howled.", "Track the beast through the snow",
              "Title of kings, crown of thorns", "The album of my sorrow", "Year after year: the dead return",
              "The artist: a painter of graves"]:
        assert lyric_rules.metadata_lines(s) == (s, 0), s


# --- credits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("credit", [
    "Lyrics by John Doe", "Lyrics: Chuck Schuldiner", "Music: Jane Roe & The Band", "Music by Tony Iommi",
    "Words and music by Tom Araya, Jeff Hanneman", "All lyrics written by Quorthon", "Lyrics & Music: Schuldiner",
    "(Lyrics: Hansen / Music: Kiske)", "[Music: Hansen]", "Music by Hansen, lyrics by Kiske", "Arranged by Ennio Morricone",
    "Lyrics:", "MUSIC:", "Thanks to Joe for sending these lyrics.", "Thanks to dark_angel for correcting track #3 lyrics.",
    "Special thanks to Anna for the corrections", "Thanks to metalhead666 for sending track #5",
    "Submitted by metalhead666", "Lyrics submitted by some guy", "Corrections by Anna", "Corrections: Anna",
    "Corrected by Mike Smith", "Thanks to joe@example.com", "Music: Traditional",
])
def test_credits_removed(credit):
    assert lyric_rules.credits(f"a verse\n{credit}\nanother verse") == ("a verse\nanother verse", 1)


def test_credit_words_inside_verse_stay():
    for s in ["By the river of blood we stand", "Music of the spheres", "The words of the dead", "Thanks to the night",
              "Thanks to the night for sending me home", "music by the river", "Words: they cut like knives",
              "Lyrics by candlelight, music by the sea", "      words:", "Corrected by the hand of fate",
              "By Christopher Marlowe", "Written by the dead", "The music: a funeral march for all of us"]:
        assert lyric_rules.credits(s) == (s, 0), s


# --- a lyric site's own apparatus ----------------------------------------------------------------


@pytest.mark.parametrize("rule,line,left", [
    ("track_durations", "4:57", None), ("track_durations", "(4:57)", None), ("track_durations", "[04:57]", None),
    ("track_durations", "1:04:57", None), ("track_durations", "Into the Void (4:57)", "Into the Void"),
    ("track_durations", "Into the Void - 4:57", "Into the Void"),
    ("track_headings", "7. The Call of Ktulu", None), ("track_headings", "07. Fade To Black", None),
    ("track_headings", "1. Nightfall", None), ("track_headings", "12. In The Shadow Of The Horns", None),
    ("album_headers", 'album: "Nightfall In Middle-Earth" (1998)', None), ("album_headers", 'EP: "The Somberlain" (1993)', None),
    ("album_headers", 'demo: "Burial"', None), ("album_headers", "live album: “Alive In Athens” (1999)", None),
    ("correction_requests", "Corrections are welcome", None), ("correction_requests", "corrections welcome!", None),
    ("correction_requests", "Send corrections to the typist", None),
    ("correction_requests", "Please send any corrections to joe", None),
    ("correction_requests", "If you find any mistakes in these lyrics, please let me know", None),
    ("correction_requests", "All corrections are appreciated.", None),
])
def test_lyric_site_apparatus_removed(rule, line, left):
    want = "a verse\n" + (f"{left}\n" if left else "") + "another verse"
    assert getattr(C, rule)(f"a verse\n{line}\nanother verse") == (want, 1)


def test_lyric_site_shapes_inside_verse_stay():
    for s in ["At 4:57 the clock stopped", "10:30 and the night is young", "1. I will rise again",
              "7. and the seventh seal was broken,", "3. Fire, Walk With Me;", "Send me to the grave",
              "Corrections of the soul are welcome in hell", "If you find my errors, forgive me", "The album of my sorrow",
              'She said: "Come" (and I came)', "album of the dead: a requiem", "Into the void (and beyond)",
              "27. Sid and Vid, Soekin and Eikin, Svöl and Gunnthrô, Fiörm and"]:  # a numbered Edda stanza
        for rule in ("track_durations", "track_headings", "album_headers", "correction_requests"):
            assert getattr(C, rule)(s) == (s, 0), (rule, s)


def test_planted_site_noise_goes_and_every_lyric_line_stays():
    """A song page in the site's layout with planted noise of every family: >= 95% of the noise
    lines go, every lyric line stays."""
    lyrics = ["Into the night we ride", "Steel and thunder in our hands", "The dead ride with us",
              "At 4:57 the clock stopped", "1. I will rise again", "By the river of blood we stand",
              "Send me to the grave", "Thanks to the night for hiding me", "The words of the dead are carved in stone"]
    noise = ['album: "Fire Of The North" (1994)', "1. Into The Night", "01. Steel And Thunder", "4:57", "(05:12)",
             "[Chorus]", "(x2)", "Lyrics by John Doe", "Music: Jane Roe", "Submitted by metalhead666",
             "Thanks to Anna for the corrections", "Corrections are welcome", "Send corrections to the typist",
             "If you find any mistakes in these lyrics, let me know", "www.darklyrics.com", "Artist: Frostmoon",
             "Track 3", "[Instrumental]", "12", "2. The Dead Ride With Us (6:01)"]
    page = []
    for i, line in enumerate(lyrics):
        page += [noise[2 * i % len(noise)], line, noise[(2 * i + 1) % len(noise)]]
    page += noise[2 * len(lyrics):]
    out, counts = C.clean_text("\n".join(page))
    kept = out.split("\n")
    assert all(line in kept for line in lyrics), (kept, counts)
    left = [n for n in noise if n in kept]
    assert len(left) <= 0.05 * len(noise), left


# --- URLs and e-mails ------------------------------------------------------------------------------


def test_urls_and_emails():
    text, n = text_rules.urls_emails("Visit http://www.darklyrics.com/lyrics/x.html now\nmail <joe@example.com>\n"
                            "www.band.net\nsee darklyrics.com.\n(https://a.org/b?c=d)")
    assert text.rstrip("\n") == "Visit now\nmail\nsee."
    assert n == 5


def test_urls_keep_ordinary_dots_and_ats():
    for s in ["The end. Of all.", "Meet me at dawn @ the grave", "e.g. the night", "Mr. Crowley"]:
        assert text_rules.urls_emails(s) == (s, 0), s


# --- numeric noise --------------------------------------------------------------------------------


def test_numeric_noise_removes_apparatus():
    raw = ("  The wolf howls at the moon[12]\n42\n- 7 -\n[Pg 9]\n{481}Sweet night\n"
           "Or pace the floor of gloom                       320\n"
           "       30 As himself he had bidden, while the friend\n"
           "          Word-sway wielded,\n"
           "66:001:001 The Revelation of Jesus Christ\n"
           "Thou mayst dream of her with me.              _55\n"
           "[Footnote 3: A long note\nover two lines.]\nLast line")
    text, n = text_rules.numeric_noise(raw)
    assert text == ("  The wolf howls at the moon\nSweet night\nOr pace the floor of gloom\n"
                    "          As himself he had bidden, while the friend\n"
                    "          Word-sway wielded,\nThe Revelation of Jesus Christ\n"
                    "Thou mayst dream of her with me.\nLast line")
    assert n == 10


def test_numbers_inside_verse_stay():
    for s in ["Seven seals and 666 names", "In 1349 the plague came", "3 < 4", "I. THE DESCENT", "37. Hraesvelg he is called",
              "At 3:16 the clock stopped", "12:00 midnight strikes", "Room 101", "The 13th hour",
              "  The   12 men came", "Room 101   Then the night", "foo 1:2:3 bar", "1349 the plague"]:
        assert text_rules.numeric_noise(s) == (s, 0), s


def test_leading_indentation_goes_and_the_verse_stays():
    raw = ("    Once upon a midnight dreary,\n      while I pondered, weak and weary,\n\n\tQUEEN.\n"
           "Not indented at all\n  The   spaces   inside stay  \n   \n")
    text, n = text_rules.leading_indentation(raw)
    assert text == ("Once upon a midnight dreary,\nwhile I pondered, weak and weary,\n\nQUEEN.\n"
                    "Not indented at all\nThe   spaces   inside stay  \n   \n")
    assert n == 4  # one per de-indented line; blank lines are the whitespace rule's
    # in the whole pipeline the margins of a poem go and its line breaks and stanzas stay
    clean, counts = C.clean_text("  The raven spoke\n    Nevermore\n\n  Quoth the raven\n")
    assert clean == "The raven spoke\nNevermore\n\nQuoth the raven" and counts["leading_indentation"] == 3


# --- duplicates -------------------------------------------------------------------------------------

SONG_A = """In the halls of the mountain king the torches burn low tonight
Shadows crawl across the stone where the ancient warriors fight
Blood upon the frozen ground and the ravens circle high
We will never bow our heads beneath the burning sky
Steel upon the anvil rings and the forge is burning bright
Every oath we swore in blood will be honoured in the fight
Through the storm and through the fire we ride on to the end
Never shall the northern wolves to another master bend"""
REFRAIN = """Rise, rise, children of the night
Rise, rise, into the endless fight
Rise, rise, the blood moon shining bright"""
SONG_B = """Under the ice the drowned ones sleep with open staring eyes
Waiting for the horn to sound when the serpent will arise
Cold the water, black the deep, and silent every grave
No one ever came back home who sailed the winter wave
Whispers rising from the fjord call the sailors by their name
Every soul the ocean takes it never gives again"""


def test_dedup_exact_near_and_shared_refrain():
    d = dedup.Deduper()
    assert d.check(SONG_A) is None
    assert d.check(SONG_A.upper().replace("\n", "  \n")) == "exact"  # same text up to case and spacing
    near = SONG_A.replace("torches burn low tonight", "torches burning low").replace("ravens", "crows")
    assert dedup.jaccard(dedup.shingles(SONG_A), dedup.shingles(near)) >= 0.8
    assert d.check(near) == "near"
    # two different songs that share a refrain, three times each: both stay
    a = "\n\n".join([SONG_A, REFRAIN, REFRAIN, REFRAIN])
    b = "\n\n".join([SONG_B, REFRAIN, REFRAIN, REFRAIN])
    d2 = dedup.Deduper()
    assert d2.check(a) is None and d2.check(b) is None


def test_minhash_agrees_with_jaccard_roughly():
    sa, sb = dedup.shingles(SONG_A), dedup.shingles(SONG_B)
    same = (dedup.minhash(sa) == dedup.minhash(sa)).mean()
    diff = (dedup.minhash(sa) == dedup.minhash(sb)).mean()
    assert same == 1.0 and diff < 0.2
    assert dedup.jaccard(sa, sb) < 0.05


# --- the command: inputs, outputs, report -------------------------------------------------------------


def _songs(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_clean_jsonl_txt_and_folder(tmp_path):
    songs = _songs(tmp_path / "songs.jsonl", [
        {"artist": "Dread", "artist_slug": "dread", "album": "Night", "year": 1991, "track": 1, "title": "Black Rain",
         "lyrics": "Lyrics by John Doe\n[Chorus]\n" + SONG_A, "url": "http://www.darklyrics.com/lyrics/dread/night.html#1"},
        {"artist": "Dread", "artist_slug": "dread", "album": "Night", "year": 1991, "track": 2, "title": "Silence",
         "lyrics": "[Instrumental]", "url": "http://www.darklyrics.com/lyrics/dread/night.html#2"},
        {"artist": "Dread", "artist_slug": "dread", "album": "Night", "year": 1991, "track": 3, "title": "Black Rain",
         "lyrics": SONG_A + "\n", "url": "http://www.darklyrics.com/lyrics/dread/night.html#3"},
        {"artist": "Dread", "artist_slug": "dread", "album": "Night", "year": 1991, "track": 1, "title": "Black Rain",
         "lyrics": SONG_B, "url": "http://www.darklyrics.com/lyrics/dread/night.html#4"},
    ])
    other = _songs(tmp_path / "poems.jsonl", [{"text": "A poem of frost\nand of fire", "title": "Frost"}])
    folder = tmp_path / "texts" / "deep"
    folder.mkdir(parents=True)
    (folder / "ode.txt").write_bytes("Ode to the grave\r\nwith CRLF\r\n".encode())
    (tmp_path / "texts" / "notes.md").write_text("not read")
    single = tmp_path / "single.txt"
    single.write_text("A single file of verse", encoding="utf-8")

    out = tmp_path / "out" / "corpus.jsonl"
    report = C.clean([songs, other, tmp_path / "texts", single], out=out, progress=False)
    docs = _read(out)
    assert [d["title"] for d in docs] == ["Black Rain", "Black Rain", "Frost", "ode", "single"]
    assert len({d["id"] for d in docs}) == len(docs)  # ids are unique even for the same artist/album/track/title
    song = docs[0]
    assert song["source"] == "darklyrics" and song["artist"] == "Dread" and song["year"] == 1991 and song["album"] == "Night"
    assert song["text"] == SONG_A
    assert docs[2]["source"] == "poems" and docs[3]["text"] == "Ode to the grave\nwith CRLF"
    assert all("\r" not in d["text"] for d in docs)

    assert report["documents_in"] == 7 and report["documents_out"] == 5
    assert report["dropped_empty"] == 1 and report["dropped_duplicates_exact"] == 1
    assert report["rules"]["credits"] == 1 and report["rules"]["section_repeat_markers"] == 1
    assert report["rules"]["placeholders"] == 1 and report["rules"]["duplicates"] == 1

    on_disk = json.loads((tmp_path / "out" / "clean_report.json").read_text())
    assert on_disk == report
    assert set(on_disk["rules"]) == set(C.RULE_NAMES)
    for key in ("documents_in", "documents_out", "dropped_empty", "dropped_duplicates_exact", "dropped_duplicates_near",
                "chars_in", "chars_out", "sources"):
        assert key in on_disk
    assert not list((tmp_path / "out").glob(".tmp-*"))  # the temporary files were renamed away


def test_clean_errors_name_the_input(tmp_path):
    with pytest.raises(AtomError, match="missing.txt"):
        C.clean([tmp_path / "missing.txt"], out=tmp_path / "c.jsonl", progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"lyrics": "ok"}\nnot json\n')
    with pytest.raises(AtomError, match=r"bad.jsonl:2"):
        C.clean([bad], out=tmp_path / "c.jsonl", progress=False)
    notext = _songs(tmp_path / "notext.jsonl", [{"title": "x"}])
    with pytest.raises(AtomError, match="lyrics"):
        C.clean([notext], out=tmp_path / "c.jsonl", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtomError, match="no .txt"):
        C.clean([tmp_path / "empty"], out=tmp_path / "c.jsonl", progress=False)
    assert not (tmp_path / "c.jsonl").exists()
    assert not list(tmp_path.glob(".tmp-*"))  # the corpus half-written before bad.jsonl:2 is gone too


def test_clean_cli(tmp_path, capsys):
    from atomlib.cli import main

    (tmp_path / "a.txt").write_text("Lyrics by Someone Else\nThe night is dark", encoding="utf-8")
    assert main(["clean", str(tmp_path / "a.txt"), "--out", str(tmp_path / "c.jsonl")]) == 0
    assert _read(tmp_path / "c.jsonl")[0]["text"] == "The night is dark"
    assert "credits" in capsys.readouterr().out
    assert main(["clean", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "c.jsonl")]) == 2
    assert "atom clean: error:" in capsys.readouterr().err


# --- what notebook 01 shows ------------------------------------------------------------------------


def test_views_of_a_clean_run(tmp_path, capsys):
    texts = [f"Poem {i}: the raven calls at night,\nthe {i}th bell tolls for the dead {i}" for i in range(5)]
    songs = _songs(tmp_path / "songs.jsonl", [{"text": t, "title": f"P{i}"} for i, t in enumerate(texts)]
                   + [{"text": "Lyrics by Some Body\n" + texts[0], "title": "again"}])
    report = C.clean([songs], out=tmp_path / "c.jsonl", progress=False)
    frame = views.rules_frame(report)
    assert list(frame["count"]) == sorted(report["rules"].values(), reverse=True)
    assert frame.loc["duplicates", "count"] == 1 and frame.loc["credits", "count"] == 1
    assert "rules" not in views.report_summary(report) and views.report_summary(report)["documents_out"] == 5
    assert views.plot_rule_counts(report).axes[0].get_xscale() == "log"
    views.show_documents(tmp_path / "c.jsonl", n=2, seed=0)
    first = capsys.readouterr().out
    assert first.count("--- songs/") == 2 and "the raven calls" in first
    views.show_documents(tmp_path / "c.jsonl", n=2, seed=0)
    assert capsys.readouterr().out == first  # the same seed shows the same documents


def test_corpus_inputs_without_scraping():
    raw = paths.data_dir("raw")
    assert data_setup.corpus_inputs() == [raw / "public_domain" / "gutenberg"]
    assert data_setup.corpus_inputs(include_shakespeare=True, local_inputs=["mine.txt"]) == [
        raw / "public_domain" / "gutenberg", raw / "public_domain" / "tinyshakespeare", Path("mine.txt")]


# --- real Project Gutenberg files from the mirror -----------------------------------------------------

REAL = ["gutenberg/coleridge_rime_of_the_ancient_mariner.txt", "gutenberg/blake_poems.txt", "gutenberg/kjv_revelation.txt"]


def test_real_gutenberg_files(tmp_path):
    mirror = paths.corpus_mirror()
    if mirror is None or not all((mirror / f).is_file() for f in REAL):
        pytest.skip("offline corpus mirror not found (set ATOM_MIRROR)")
    raw = {f: (mirror / f).read_bytes() for f in REAL}
    assert all(b"\r\n" in r and b"Project Gutenberg" in r for r in raw.values())
    report = C.clean([mirror / f for f in REAL], out=tmp_path / "c.jsonl", progress=False)
    docs = {d["title"]: d for d in _read(tmp_path / "c.jsonl")}
    assert set(docs) == {"The Rime of the Ancient Mariner", "Poems of William Blake",
                         "The Bible, King James version, Book 66: Revelation"}
    assert docs["Poems of William Blake"]["author"] == "William Blake"
    for d in docs.values():
        t = d["text"]
        assert d["source"] == "gutenberg"
        assert "\r" not in t and "\ufeff" not in t
        assert "Gutenberg" not in t and "*** START" not in t and "*** END" not in t and "SMALL PRINT" not in t
        assert not any(line != line.rstrip() for line in t.split("\n"))
        assert "\n\n\n" not in t
    mariner = docs["The Rime of the Ancient Mariner"]["text"]
    assert "It is an ancient Mariner," in mariner and "Water, water, every where," in mariner
    assert "The Revelation of Jesus Christ" in docs["The Bible, King James version, Book 66: Revelation"]["text"]
    assert report["rules"]["gutenberg_header_footer"] >= 6 and report["rules"]["unicode_whitespace"] > 1000
