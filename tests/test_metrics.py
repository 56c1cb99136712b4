"""Each text metric on hand-made text with a known answer."""

from __future__ import annotations

import math
import random

import numpy as np
import pronouncing
import pytest

from atomlib.evaluation.char_ngrams import CharNgramModel, CharTfidf, bits_per_char, tfidf_cosine
from atomlib.evaluation.copying import CopyIndex, normalize_space, suffix_array
from atomlib.evaluation.metrics import (ThemeLexicon, distinct_n, known_word_rate, light_stem, repeated_line_share,
                                        repeated_ngram_share, rhyme_density, rhyme_pairs, words, words_rhyme)


# --- words, repetition, diversity ------------------------------------------------------------


def test_words_lowercase_and_keep_inner_apostrophes():
    assert words("O'er the Night's  dark-sea, 13 KINGS!") == ["o'er", "the", "night's", "dark", "sea", "13", "kings"]


def test_distinct_n_exact_values():
    assert distinct_n("the cat the dog", 1) == 3 / 4
    assert distinct_n("the cat the dog", 2) == 1.0  # (the cat) (cat the) (the dog)
    assert distinct_n("a a a a", 1) == 1 / 4
    assert distinct_n("a a a a", 3) == 1 / 2  # (a a a) twice, one distinct
    assert distinct_n("one two", 3) is None  # no trigram at all


def test_distinct_n_pools_texts_without_crossing_them():
    assert distinct_n(["a b", "a b"], 1) == 2 / 4
    assert distinct_n(["a b", "c d"], 2) == 1.0  # (b c) is not a bigram: texts are not joined
    assert distinct_n(["a b", "c"], 2) == 1.0


def test_repeated_line_share_ignores_case_punctuation_and_blank_lines():
    text = "Into the fire\nout of the dark\n\ninto the FIRE!\n  Into the fire  "
    assert repeated_line_share(text) == 2 / 4  # 4 lines, 2 distinct
    assert repeated_line_share("one\ntwo\nthree") == 0.0
    assert repeated_line_share("\n\n") is None


def test_repeated_ngram_share():
    # 4-grams: abcd bcda cdab dabc abcd -> 5, 4 distinct
    assert repeated_ngram_share("a b c d a b c d", 4) == pytest.approx(1 / 5)
    assert repeated_ngram_share("a b c d e", 4) == 0.0
    assert repeated_ngram_share("a b c", 4) is None


def test_known_word_rate_uses_the_given_dictionary_check():
    known = {"the", "night", "is", "dark"}
    assert known_word_rate("The night is dqrk, 13 times", lambda w: w.lower() in known) == 3 / 5
    assert known_word_rate("-- 42 --", lambda w: True) is None


def test_known_word_rate_with_the_filters_dictionary():
    from atomlib.generation.filters import is_word

    assert known_word_rate("the night is burning", is_word) == 1.0
    assert known_word_rate("hthere aver ous qzxv", is_word) < 0.75


# --- rhyme ----------------------------------------------------------------------------------


def test_word_rhymes_follow_the_cmu_dictionary():
    assert words_rhyme("night", "light")
    assert words_rhyme("Fire", "desire")
    assert not words_rhyme("night", "day")
    assert not words_rhyme("night", "night")  # the same word is repetition, not rhyme
    assert not words_rhyme("night", "xqzzyv")  # not in the dictionary: rhymes with nothing
    assert not words_rhyme(None, "light")


def test_word_rhymes_agree_with_pronouncing_rhymes():
    for a, b in [("night", "light"), ("night", "day"), ("sorrow", "tomorrow"), ("death", "breath"),
                 ("fire", "higher"), ("stone", "alone"), ("king", "sing"), ("sea", "tree"), ("blood", "flood")]:
        assert words_rhyme(a, b) == (b in pronouncing.rhymes(a)), (a, b)


def test_rhyme_density_counts_adjacent_pairs_within_stanzas():
    text = "Into the night,\ntoward the light\nand through the day\n\nalone in stone\nafar"
    # stanza 1: (night, light) yes, (light, day) no; stanza 2: (stone, afar) no -> 1 of 3
    assert rhyme_pairs(text) == (1, 3)
    assert rhyme_density(text) == pytest.approx(1 / 3)
    assert rhyme_density("burning night\n\nburning light") is None  # no pair inside a stanza
    assert rhyme_density("one line only") is None


# --- theme ----------------------------------------------------------------------------------


def test_light_stem():
    assert light_stem("burning") == light_stem("burned") == light_stem("burns") == light_stem("burn") == "burn"
    assert light_stem("flames") == light_stem("flame")
    assert light_stem("ashes") == light_stem("ash")
    assert light_stem("embers") == "ember"
    assert light_stem("is") == "is"  # never shorter than 3 letters


def test_theme_hit_through_a_lexicon_neighbour():
    lex = ThemeLexicon({"fire": ["flame", "burn", "ash"], "sea": ["wave", "tide"]})
    assert lex.themes("fire and steel") == ["fire"]
    assert lex.on_theme("fire and steel", "the flames rose high") is True  # neighbour, plural
    assert lex.on_theme("fire and steel", "it burned all night") is True
    assert lex.on_theme("fire and steel", "the waves rolled in") is False
    assert lex.on_theme("a quiet afternoon", "flames") is None  # the prompt touches no theme
    # a prompt word that is a neighbour brings in its whole entry
    assert lex.on_theme("ashes everywhere", "the fire went out") is True
    assert lex.hits("fire", "Flames! and ash, and rain") == ["ash", "flames"]


def test_shipped_lexicon_has_dark_themes():
    lex = ThemeLexicon()
    assert len(lex.entries) >= 25
    assert lex.on_theme("fire and blood", "the inferno took the city")
    assert lex.on_theme("winter", "frost on the window")


# --- relevance: TF-IDF ------------------------------------------------------------------------


def test_tfidf_cosine_identical_is_one_and_disjoint_is_zero():
    assert tfidf_cosine("the night is burning", "the night is burning") == pytest.approx(1.0)
    assert tfidf_cosine("aaaa bbbb", "xyz qqq") == pytest.approx(0.0)
    tf = CharTfidf().fit(["the night is burning", "a quiet sea", "the sea of fire"])
    near = tf.cosine("the night is burning", "the night burns")
    far = tf.cosine("the night is burning", "the quiet sea")
    assert 0.0 < far < near < 1.0


def test_tfidf_ngrams_stay_inside_words():
    assert set(CharTfidf(n_range=(3, 3)).grams("Ab, cd")) == {" ab", "ab ", " cd", "cd "}


def test_tfidf_idf_formula():
    tf = CharTfidf(n_range=(3, 3)).fit(["abc", "abd"])
    # " ab" occurs in both documents, "abc" in one: idf = ln(3/3)+1 and ln(3/2)+1
    assert tf.idf[" ab"] == pytest.approx(1.0)
    assert tf.idf["abc"] == pytest.approx(math.log(3 / 2) + 1)


# --- language-model arithmetic and the character baselines --------------------------------------


def test_bits_per_char_conversion():
    assert bits_per_char(2 * math.log(2), 1.0) == pytest.approx(2.0)
    # a BPE token covering 4 characters at 4 bits per token is 1 bit per character
    assert bits_per_char(4 * math.log(2), 4.0) == pytest.approx(1.0)
    assert bits_per_char(1.0, 3.5) == pytest.approx(1 / math.log(2) / 3.5)


def test_unigram_bpc_by_hand():
    m = CharNgramModel("abab", order=1)
    # V = 2 chars + unknown = 3, N = 4: p(a) = p(b) = (2+1)/(4+3), p(unseen) = 1/7
    assert m.bpc("ab") == pytest.approx(math.log2(7 / 3))
    assert m.bpc("ac") == pytest.approx((math.log2(7 / 3) + math.log2(7)) / 2)


def test_bigram_bpc_by_hand():
    m = CharNgramModel("abab", order=2)
    # bigrams ab, ba, ab: count(a->) = 2, count(b->) = 1, V = 3
    p_a = 3 / 7  # the first character, by the unigram
    p_b_after_a = (2 + 1) / (2 + 3)
    p_a_after_b = (1 + 1) / (1 + 3)
    p_a_after_a = (0 + 1) / (2 + 3)
    assert m.bpc("ab") == pytest.approx(-(math.log2(p_a) + math.log2(p_b_after_a)) / 2)
    assert m.bpc("aba") == pytest.approx(-(math.log2(p_a) + math.log2(p_b_after_a) + math.log2(p_a_after_b)) / 3)
    assert m.bpc("aa") == pytest.approx(-(math.log2(p_a) + math.log2(p_a_after_a)) / 2)


def test_baseline_generation_is_seeded_and_uses_known_chars():
    text = "the night is dark and the fire is burning\n" * 20
    for order in (1, 2):
        m = CharNgramModel(text, order)
        a, b = m.generate(200, seed=5, context="x"), m.generate(200, seed=5, context="x")
        assert a == b and len(a) == 200 and set(a) <= set(text)
        assert m.generate(200, seed=6) != a
        assert m.generate(0, seed=1) == ""
    # the bigram learned what follows what: "q" never appears, "h" mostly follows "t"
    bi = CharNgramModel(text, 2)
    s = bi.generate(2000, seed=1)
    assert s.count("th") > s.count("tq") and bi.bpc(text[:100]) < CharNgramModel(text, 1).bpc(text[:100])


# --- copying -------------------------------------------------------------------------------------


def test_suffix_array_sorts_suffixes():
    rng = random.Random(0)
    for _ in range(100):
        s = "".join(rng.choice("ab c\n") for _ in range(rng.randint(1, 80)))
        sa = suffix_array(np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32))
        assert [s[i:] for i in sa] == sorted(s[i:] for i in range(len(s)))


def test_copy_rate_of_train_substring_is_one_and_of_unseen_text_small():
    train = ("Fire and steel and thunder, the night is burning under,\n"
             "Shadows of the fallen kings are marching to the sea.\n") * 3 + "Upon the midnight, dreary, while I pondered"
    index = CopyIndex(train)
    verbatim = "the night is burning under,\nShadows of the fallen"
    assert index.copy_rate(verbatim) == 1.0
    assert index.longest_match(verbatim)[0] == len(verbatim)
    unseen = "Zyx quorp vlem jik wub?"
    assert index.copy_rate(unseen) < 0.2
    assert index.copy_rate("") is None
    # a copied span inside new text is found where it is ('q' and 'z' never occur in train)
    assert index.longest_match("qqqq" + "marching to the sea" + "zzzz") == (len("marching to the sea"), 4)


def test_longest_match_equals_brute_force():
    rng = random.Random(1)
    for _ in range(200):
        train = "".join(rng.choice("abc \n") for _ in range(rng.randint(1, 60)))
        query = "".join(rng.choice("abcd ") for _ in range(rng.randint(0, 30)))
        t, q = normalize_space(train), normalize_space(query)  # the index compares normalised text
        brute = max([j - i for i in range(len(q)) for j in range(i, len(q) + 1) if q[i:j] in t] + [0])
        assert CopyIndex(train).longest_match(query)[0] == brute


def test_copy_ignores_layout_whitespace():
    index = CopyIndex("old king\n      _Canto_\n\n   the sea")
    assert index.longest_match("x" + " " * 40 + "y") == (1, 1)  # a run of spaces is one space
    assert index.copy_rate("king _Canto_ the") == 1.0  # same words, other layout
    assert index.copy_rate("the   sea") == 1.0


def test_copy_index_depth_caps_long_matches():
    train = "abcdefghij" * 10
    assert CopyIndex(train, depth=8).longest_match(train[:40])[0] == 8
