"""The output filter pipeline: each stage removes what it should and keeps real verse."""

from __future__ import annotations

import pytest

from atomlib.generation.filters import (
    STAGE_NAMES,
    FilterContext,
    apply_filters,
    filter_sample,
    collapse_repeats,
    cut_boundary,
    min_quality,
    normalize_whitespace,
    strip_artifacts,
    trim_truncated,
)

VERSE = ("By the river of blood\n"
         "Where the silent ravens fly,\n"
         "Written by the hand of fate, the words remain.\n"
         "Side by side we stand; the album of our years (we burn) burns.")


def run(stage, text, **ctx):
    out, removed, detail = stage(text, FilterContext(**ctx))
    return out, removed, detail


def test_stage_names_and_order():
    assert STAGE_NAMES[:6] == ["strip_artifacts", "trim_truncated", "collapse_repeats", "normalize_whitespace",
                               "cut_boundary", "min_quality"]
    r = apply_filters("By the river of blood.")
    assert [s.name for s in r.stages] == STAGE_NAMES


def test_real_verse_survives_every_stage():
    r = apply_filters(VERSE + "\n")
    assert r.text == VERSE and r.passed and r.reason is None
    assert r.changed_stages == [] or r.changed_stages == ["normalize_whitespace"]
    assert r.artifact_free


# --- strip_artifacts -----------------------------------------------------------------------


@pytest.mark.parametrize("junk", [
    "Artist: Black Sabbath", "ALBUM: Paranoid (1970)", "Track 3", "Track 03: War Pigs", "3. War Pigs",
    "Lyrics by James Hetfield", "Music and lyrics by Hetfield, Ulrich", "Thanks to John Smith for sending these lyrics",
    "Thanks to metalhead99 for correcting track #4 lyrics.", "[Instrumental]", "Instrumental", "www.darklyrics.com",
    "*** END OF THE PROJECT GUTENBERG EBOOK THE RAVEN ***", "Produced by David Widger", "CANTO III", "IV.",
    "Repeat chorus",
])
def test_strip_artifacts_removes_whole_junk_lines(junk):
    text = f"By the river of blood\n{junk}\nThe ravens fly."
    out, removed, detail = run(strip_artifacts, text)
    assert junk.strip() in removed or any(junk.strip() in r for r in removed), (removed, detail)
    assert "By the river of blood" in out and "The ravens fly." in out
    assert junk not in out


@pytest.mark.parametrize("marker", ["[Chorus]", "[Verse 2:]", "[Illustration]", "[Illustration: The Raven]",
                                    "(x2)", "(Repeat chorus)", "(guitar solo)", "x4"])
def test_strip_artifacts_removes_inline_markers(marker):
    out, removed, _ = run(strip_artifacts, f"The night is burning {marker}\nand the stars fall")
    assert marker not in out and "The night is burning" in out and "and the stars fall" in out
    assert removed


def test_strip_artifacts_italics_and_stray_punctuation():
    out, removed, _ = run(strip_artifacts, "] _Once_ upon a midnight dreary")
    assert out.strip() == "Once upon a midnight dreary" and "]" in removed
    out, _, _ = run(strip_artifacts, ", and the rain falls", prompt="When the rain")
    assert out == ", and the rain falls"  # a continuation may start with a comma
    out, _, _ = run(strip_artifacts, "...and the rain falls")
    assert out.startswith("...and")  # an ellipsis is verse, not debris


@pytest.mark.parametrize("keep", [
    "By the river of blood", "Written by the hand of fate", "Side by side we stand", "Thanks to the night I see",
    "The album of our years", "Track the wolves across the snow", "We sing (we sing) of fire",
    "Produced by the storm, we rise",
])
def test_strip_artifacts_keeps_verse(keep):
    out, removed, detail = run(strip_artifacts, keep)
    assert out == keep and removed == [], detail


# --- trim_truncated ------------------------------------------------------------------------


def test_trim_truncated_drops_cut_words():
    out, removed, _ = run(trim_truncated, "ght falls upon the city\nand the wind is sorr")
    assert out == "falls upon the city\nand the wind is" and removed == ["ght", "sorr"]
    out, removed, _ = run(trim_truncated, "the raven flies into the darkn")
    assert out == "the raven flies into the" and removed == ["darkn"]


def test_trim_truncated_keeps_whole_and_completing_words():
    # a leading fragment that completes the prompt's last word is not cut
    out, removed, _ = run(trim_truncated, "ness of the night", prompt="Into the dark")
    assert out == "ness of the night" and removed == []
    out, removed, _ = run(trim_truncated, "the raven flies into the night")
    assert out == "the raven flies into the night" and removed == []
    out, removed, _ = run(trim_truncated, "into the darkn", complete=True)  # the caller says it ended cleanly
    assert removed == []


# --- collapse_repeats ----------------------------------------------------------------------


def test_collapse_repeats_lines_ngrams_and_runs():
    text = "the raven flies\nthe raven flies\ninto the fire into the fire into the fire\nNoooooo!!!!!!"
    out, removed, detail = run(collapse_repeats, text)
    assert out == "the raven flies\ninto the fire\nNooo!!!"
    assert "the raven flies" in removed and "repeated line" in detail


def test_collapse_repeats_keeps_a_chorus_twice_but_not_three_times():
    chorus = "Fire and steel"
    text = f"{chorus}\nwe ride tonight\n{chorus}\nthe sky is red\n{chorus}\nwe fall"
    out, removed, _ = run(collapse_repeats, text)
    assert out.count(chorus) == 2 and removed == [chorus]
    out, removed, _ = run(collapse_repeats, "no, no more\nburn, burn the night")
    assert removed == []  # two in a row is a figure of speech, not a loop


# --- normalize_whitespace -------------------------------------------------------------------


def test_normalize_whitespace():
    out, _, detail = run(normalize_whitespace, "\n\n  The night ,  the cold\t fire  \r\n\n\n\n\nAnd the end   \n\n")
    assert out == "The night, the cold fire\n\nAnd the end"
    out, _, detail = run(normalize_whitespace, "The night, the fire")
    assert out == "The night, the fire" and detail == "already tidy"


# --- cut_boundary --------------------------------------------------------------------------


def test_cut_boundary_drops_an_unfinished_last_line():
    out, removed, _ = run(cut_boundary, "The night is cold\nThe wind is howling at the")
    assert out == "The night is cold" and removed == ["The wind is howling at the"]


def test_cut_boundary_cuts_after_the_last_sentence_of_one_line():
    out, removed, _ = run(cut_boundary, "The night is cold. The wind is howling at the")
    assert out == "The night is cold."


def test_cut_boundary_keeps_what_already_ends_well():
    for text in ("The night is cold\nthe wind howls.", "The night is cold,", "one line without an end"):
        assert run(cut_boundary, text)[0] == text
    assert run(cut_boundary, "The night is cold\nthe wind", ended_at_break=True)[0] == "The night is cold\nthe wind"
    assert run(cut_boundary, "The night is cold\nthe wind", complete=True)[0] == "The night is cold\nthe wind"


def test_a_line_break_at_the_end_means_the_line_was_finished():
    r = apply_filters("The night is cold\nthe wind is howling\n")
    assert r.text == "The night is cold\nthe wind is howling"
    assert not r.stage("cut_boundary").changed


# --- min_quality ---------------------------------------------------------------------------


@pytest.mark.parametrize("text,reason", [
    ("", "empty"), ("the night", "too short"), ("!!! ??? --- 123 ... ###", "too short"),
    ("a1 b2 c3 d4 ##!! %%$$ @@ ^^ &&", "non-letters"),
    ("fire burns fire, night burns night, fire burns night, night burns fire", "too repetitive"),
    ("xqzt vrrmp glorf snekt blarv qwop.", "non-words"),
])
def test_min_quality_rejects_with_a_reason(text, reason):
    out, _, detail = run(min_quality, text)
    assert out == text and reason in detail
    r = apply_filters(text)
    assert not r.passed and reason in r.reason


def test_min_quality_passes_verse_and_respects_min_words():
    assert run(min_quality, "By the river of blood")[2] == "passed"
    assert apply_filters("tears", min_words=1).passed
    assert not apply_filters("tears").passed


# --- the pipeline ---------------------------------------------------------------------------


def test_apply_filters_records_each_stage():
    raw = ("Artist: Grave Lord\nAlbum: Funeral Skies\n\n] the night is burning [Chorus]\n"
           "the night is burning\nthe night is burning\nAnd the ravens fly over the hil")
    r = apply_filters(raw)
    assert r.text == "the night is burning"
    assert r.passed  # four words of verse are left, enough to show
    rec = {s.name: s for s in r.stages}
    assert rec["strip_artifacts"].changed and "Artist: Grave Lord" in rec["strip_artifacts"].removed
    assert not r.artifact_free
    assert rec["collapse_repeats"].changed
    assert rec["trim_truncated"].removed == ["hil"]
    assert rec["cut_boundary"].changed  # the last line lost its cut word, so it is unfinished: dropped
    assert all(isinstance(s.detail, str) and s.detail for s in r.stages)


def test_a_removed_line_does_not_split_the_stanza():
    r = apply_filters("By the river of blood\nLyrics by Tony Iommi\nthe ravens fly.\n\nA second verse ends.")
    assert r.text == "By the river of blood\nthe ravens fly.\n\nA second verse ends."


def test_a_result_reads_as_a_verdict_and_stage_rows():
    r = apply_filters("Artist: Grave Lord\nthe night is burning and the ravens fly.")
    assert r.verdict == "passed"
    rows = r.rows()
    assert [row["stage"] for row in rows] == STAGE_NAMES
    assert rows[0] == {"stage": "strip_artifacts", "changed": True, "removed": ["Artist: Grave Lord"],
                       "detail": r.stages[0].detail}
    assert apply_filters("!!").verdict == "rejected: " + apply_filters("!!").reason


class _Sample:  # what filter_sample reads of a engine.Generation
    def __init__(self, text, finish_reason):
        self.text, self.finish_reason = text, finish_reason


def test_filter_sample_trusts_a_clean_ending_only():
    text = "the ravens fly over the hil"
    assert filter_sample(_Sample(text, "stop")) == apply_filters(text, complete=True)  # a stop string ended it
    assert filter_sample(_Sample(text, "length")).text == "the ravens fly over the"  # cut by max_new_tokens
    assert filter_sample(_Sample(text, "eot"), prompt="x") == apply_filters(text, prompt="x", complete=True)
