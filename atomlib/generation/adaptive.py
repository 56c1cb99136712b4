"""Adaptive sampling: what kind of prompt is this, and how should it be sampled?

`classify_prompt(text)` sorts a prompt into one of four kinds, by rules written from their
definitions (readable, no training data needed):

    creative   asks for a composition: write/compose/sing a verse, song, lyrics, poem ...
               "Write a poem about ravens", "Could you compose a dirge?", "a song about war"
    question   asks for information: who/what/why/how/is/does ..., or ends with "?"
               "Who wrote Paranoid?", "why do ravens croak", "Fire?"
    command    asks for a task: describe, explain, tell, list, continue, summarise ...
               "Describe a battlefield at dawn", "Please explain the myth", "continue"
    thematic   a few theme words, an image or an exclamation, to be continued as verse
               "fire", "steel and thunder", "the raven at midnight", "what a night"

Precedence, when a prompt fits several kinds (decided once, here):
 1. creative wins when a composition is what is asked for, whatever the wrapper: a polite
    question ("Can you write a song?"), a command verb whose object is a verse form ("Tell me
    a song about war", "Give me lyrics"), or a form phrase ("Describe the sea in verse").
    An information question about a verse form is still a question ("Who wrote this song?",
    "What is a sonnet?", "Do you write poems?"), and an existing one asks for no composition
    ("Read this poem", "Give me the lyrics of Paranoid" are commands). A verse form first is a
    request ("ballad of the black ship"); a definite image is a theme ("the song of the wind").
 2. command: the prompt starts (after politeness: please, could you, I want you to ...)
    with a task verb (describe, explain, list ...) or phrase (go on, walk me through ...),
    even when it ends with "?" ("Could you explain the myth?"). Action verbs are no commands
    ("Burn the witch" is a theme), nor are task verbs used as nouns ("Name of the rose").
 3. question: a question word or an auxiliary verb with a subject at the start, or a final
    "?" ("Fire?" is a question: the user asks something about fire).
 4. thematic: everything else, including exclamations ("what a night", "how dark the sky").

`extract_topic(text)` takes the request words off a prompt ("write a poem about the sea" ->
"the sea"); generation.presets frames a prompt with it and holds each kind's sampling preset.
"""

from __future__ import annotations

import json
import re
import unicodedata
from importlib import resources

KINDS = ("creative", "question", "command", "thematic")

# --- vocabulary --------------------------------------------------------------------------------

VERSE_FORMS = set("""verse verses song songs lyric lyrics poem poems poetry ballad ballads hymn hymns rhyme rhymes
stanza stanzas chorus choruses ode odes sonnet sonnets anthem anthems dirge dirges limerick limericks haiku haikus
couplet couplets lament laments elegy elegies refrain refrains hook bars rap raps epic epics lullaby lullabies
serenade serenades requiem requiems psalm psalms chant chants ditty ditties quatrain quatrains tercet villanelle
shanty shanties tune tunes track tracks story stories tale tales saga sagas fable fables ballade verselet
poemlet rhyming jingle jingles""".split())
# what a verse form can be called when something is written "as" or "in" it
FORM_PHRASE = re.compile(
    r"\b(?:in|as|into|like)\s+(?:the\s+(?:style|form|shape|manner)\s+of\s+)?(?:an?\s+|some\s+)?(?:\w+\s+)?"
    r"(?:verse|verses|rhyme|rhymes|rhyming\s+\w+|song|poem|lyrics|ballad|sonnet|haiku|limerick|hymn|ode|"
    r"couplets?|stanzas?|dirge|anthem|lament|elegy|psalm|chant|lullaby|shanty)\b|\bpoetically\b|\bin\s+iambic\b")

# verbs whose object is made up: write, compose ... (creative unless the object is a report)
COMPOSE_VERBS = set("""write compose pen craft draft author sing rhyme freestyle improvise versify create generate
produce invent scribble jot spin weave rewrite""".split())
COMPOSE_PHRASES = ("come up with", "make up", "put together", "cook up", "whip up", "dream up", "think up")
# verbs that hand something over: creative when the thing is a verse form, a command otherwise
REQUEST_VERBS = set("""give tell show share make bring read recite do drop spit send offer provide hit play
perform whip cook conjure hear see get""".split())
# a verse form that is already there ("read this poem", "give me the lyrics of ...") asks for no new one
DEFINITE = set("the this that these those my your his her our their its".split())
# task verbs (a command): verbs that ask for an account, an explanation, a list ... Action verbs
# ("break the chains", "burn the witch") are left out on purpose: as prompts they are themes.
COMMAND_VERBS = set("""describe explain tell list continue summarise summarize give show name define compare
outline recount narrate discuss elaborate expand illustrate depict portray paint imagine picture envision
finish complete translate rephrase paraphrase analyse analyze interpret explore share suggest recommend teach
recite mention clarify identify enumerate talk speak present introduce reveal remind guess rank rate review
evaluate critique assess examine contrast characterise characterize decode decipher elucidate predict estimate
calculate proofread edit check help provide detail recap sum count spell convert choose pick find read
repeat""".split())
# ... of which these are nouns as often as verbs: a command only when no "of", "and", "is" ... follows
# ("Name three bands" commands; "Name of the rose", "Picture of a dying world" are themes)
NOUN_LIKE_COMMANDS = set("""list name picture paint review rate check spell count detail guess recap sum help
present share finish complete pick find read edit""".split())
NOT_AFTER_VERB = set("of and or is are was were 's has had will".split())
# multi-word commands: "go on", "keep going", "walk me through" ...
COMMAND_PHRASES = ("go on", "go ahead", "keep going", "keep writing", "keep it going", "keep on", "carry on",
                   "break down", "break it down", "walk me through", "walk us through", "sum up", "fill in",
                   "look up", "more please", "one more time", "say more", "do it again", "try again")
# objects that make write/compose a report rather than a composition
REPORT_NOUNS = set("""summary summaries description descriptions explanation explanations list lists analysis
analyses review reviews report reports overview overviews definition definitions essay essays article articles
paragraph paragraphs sentence sentences email emails bio biography biographies history guide guides tutorial
tutorials comparison comparisons critique critiques paper papers note notes outline outlines recap timeline
answer answers reply response code program script index table name names title titles""".split())

WH_WORDS = set("""what why how who whom whose when where which what's whats who's whos how's hows where's wheres
why's whys when's whens whatever wherefore""".split())
AUX = set("""is are was were am do does did has have had can could would will should shall may might must
isn't aren't wasn't weren't don't doesn't didn't hasn't haven't hadn't can't couldn't wouldn't won't shouldn't
ain't cant dont doesnt didnt wont wouldnt couldnt shouldnt isnt arent""".split())
# auxiliaries that are also nouns or verbs ("will of iron", "may the gods", "have mercy", "might and magic")
AMBIGUOUS_AUX = {"will", "may", "might", "must", "can", "have", "had", "am"}
NOT_DO_SUBJECT = set("a an me us some something this that it one".split())  # "do a rap", "do it"
SUBJECTS = set("""i you we they he she it there this that these those u ya anyone anybody someone somebody
everyone everybody nobody one thou ye""".split())
NOT_SUBJECT = set("""of and or nor but to in on for with at by from as than not so if into upon""".split())
HOW_QUESTION = AUX | set("to come many much long old often far about does big deep tall fast soon".split())
PREPOSITIONS = set("""about of on for regarding concerning around over to with in from that where which who
whose when why how what whether if called titled named like against under through""".split())
POLITE_WORDS = set("""please pls plz kindly hey hi hello ok okay so now then just yo alright well oh and also
atom bot gpt dear friend mate bro quick quickly maybe perhaps possibly really simply briefly""".split())
POLITE_PHRASES = [  # longest first; matched on word lists
    "would you be so kind as to", "would you be able to", "are you able to", "would you mind",
    "do you mind", "i would like you to", "i'd like you to", "id like you to", "i want you to",
    "i need you to", "i'd love you to", "i'd love it if you could", "i would love it if you could",
    "i'd love it if you would", "i would love you to", "go ahead and", "can you please", "could you please",
    "would you please", "will you please", "can u", "could u", "would u", "will u", "can you", "could you",
    "would you", "will you", "won't you", "wont you", "why don't you", "why dont you", "how about you",
    "let's", "lets", "let us", "let me", "help me", "try to", "try and", "i want to", "i'd like to", "i would like to",
    "i wanna", "you should", "you could", "you must", "you will", "you can", "now", "please",
    "can i get", "could i get", "can i have", "could i have", "may i have", "may i get", "can we get",
    "could we get", "can we have", "could we have", "can i hear", "could i hear", "i'll take", "ill take",
]
DESIRE = re.compile(r"^(?:i\s+(?:\w+\s+){0,2}?(?:want|need|like|love|crave|wish\s+for|fancy)|"
                    r"i'd\s+(?:like|love)|id\s+(?:like|love)|give\s+me|gimme|how\s+about|what\s+about|"
                    r"(?:i'm|im|i\s+am)\s+looking\s+for|(?:need|want)(?:\s+to\s+(?:hear|read|see))?|"
                    r"(?:one|another|some)\s+more|another|more)\b")
_ADVERBS = {"please", "pls", "plz", "kindly", "just", "maybe", "possibly", "perhaps", "also", "quickly", "really",
            "now", "briefly", "pretty", "simply"}
_PHRASE_STARTS = _ADVERBS | {"come", "make", "put", "cook", "whip", "dream", "think"}
_PHRASE_VERBS = {"go", "keep", "carry", "break", "walk", "look", "fill", "say", "try"}
INDEFINITE = set("a an some another any one few couple more new short little quick small brief long".split())


def _normalise(text: str) -> str:
    """Lower case, curly quotes straightened, emoji and symbols dropped, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    kept = []
    for c in text:
        cat = unicodedata.category(c)
        if c.isalnum() or c.isspace() or c in "'?!.,:;-\"":
            kept.append(c)
        elif cat.startswith("S") or cat.startswith("C") or cat.startswith("P"):
            kept.append(" ")
    return " ".join("".join(kept).lower().split())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*(?:'[a-z]+)?", text)  # "tell-tale" is one word


def _strip_polite(words: list[str]) -> tuple[list[str], bool]:
    """Drop greetings, "please" and request wrappers ("could you", "I want you to") from the
    front; True when a request wrapper ("can/could/would/will you", "help me") was among them."""
    modal = False
    changed = True
    while words and changed:
        changed = False
        if words[0] in POLITE_WORDS and len(words) > 1:
            words, changed = words[1:], True
            continue
        for phrase in POLITE_PHRASES:
            p = phrase.split()
            if words[:len(p)] == p and len(words) > len(p):
                nxt = words[len(p)]
                # "can you feel the fire" is a question, "can you describe it" a request
                if p[-1] in ("you", "u") and p[0] in ("can", "could", "would", "will", "won't", "wont") \
                        and nxt not in COMMAND_VERBS | COMPOSE_VERBS | REQUEST_VERBS | _PHRASE_STARTS | _PHRASE_VERBS:
                    continue
                modal = modal or p[-1] in ("you", "u", "mind", "to", "please", "me")
                words, changed = words[len(p):], True
                break
    return words, modal


def _object_words(words: list[str], start: int) -> list[str]:
    """The words after a verb up to the first preposition or question word (its object)."""
    out = []
    for w in words[start:start + 6]:
        if w in PREPOSITIONS or w in WH_WORDS:
            break
        out.append(w)
    return out


def _compose_phrase(head: list[str]) -> int:
    """Length of a multi-word compose verb at the start ("come up with"), else 0."""
    for phrase in COMPOSE_PHRASES:
        p = phrase.split()
        if head[:len(p)] == p:
            return len(p)
    return 0


def _asks_for_verse(head: list[str], norm: str) -> bool:
    """Creative: the request is for a composition."""
    if not head:
        return False
    n = _compose_phrase(head)
    if n:
        return not any(w in REPORT_NOUNS for w in _object_words(head, n))
    verb = head[0]
    obj = _object_words(head, 1)
    if verb in COMPOSE_VERBS:
        return not any(w in REPORT_NOUNS for w in obj)
    if verb in REQUEST_VERBS and any(w in VERSE_FORMS for w in obj) and not any(w in DEFINITE for w in obj):
        return True
    if FORM_PHRASE.search(norm):
        return True
    # "a poem about ravens", "some lyrics", "I want a song", "how about a ballad", "poem: the sea"
    joined = " ".join(head)
    m = DESIRE.match(joined)
    rest = _words(joined[m.end():]) if m else head
    lead = []
    for w in rest[:5]:
        if w in VERSE_FORMS:
            # "a poem ...", "I'd love a song", or the form itself first: "ballad of the black ship";
            # "the song of the wind" (a definite image) stays a theme
            if (m and not any(w in DEFINITE for w in lead)) or not lead or lead[0] in INDEFINITE:
                return True
            break
        if w in PREPOSITIONS:
            break
        lead.append(w)
    return False


def _aux_question(words: list[str]) -> bool:
    """An auxiliary verb with a subject after it: "is death the end", "do ravens dream"."""
    if len(words) < 2 or words[0] not in AUX or words[1] in NOT_SUBJECT:
        return False
    w0, nxt = words[0], words[1]
    if w0 in AMBIGUOUS_AUX:
        return nxt in SUBJECTS
    if w0 == "do":
        return nxt not in NOT_DO_SUBJECT
    return True


def _is_question(words: list[str], raw_norm: str) -> bool:
    if raw_norm.rstrip(" .!\"'").endswith("?"):
        return True
    if not words:
        return False
    w0 = words[0]
    nxt = words[1] if len(words) > 1 else ""
    if w0 in ("what", "whats", "what's") and nxt in ("a", "an"):
        return False  # an exclamation: "what a night"
    if w0 == "how":
        return nxt in HOW_QUESTION  # "how do ravens fly" asks; "how dark the night" exclaims
    if w0 in ("when", "where", "why", "whenever", "wherever"):
        return nxt in AUX or nxt == "to" or nxt in SUBJECTS - {"this", "that", "these", "those"} and len(words) > 2 \
            and words[2] in AUX
    if w0 in WH_WORDS:
        return True
    if _aux_question(words):
        return True
    if " ".join(words[:3]) in ("i wonder if", "i wonder why", "i wonder what", "i wonder how", "i wonder who") \
            or " ".join(words[:4]) in ("i want to know", "i'd like to know", "i would like to know") \
            or " ".join(words[:3]) in ("do you know", "tell me whether"):
        return True
    return False


def _commands(head: list[str]) -> bool:
    """The words start with a command: a task verb (used as a verb) or a command phrase."""
    if any(head[:len(p.split())] == p.split() for p in COMMAND_PHRASES):
        return True
    if head[0] in REQUEST_VERBS and any(w in REPORT_NOUNS for w in _object_words(head, 1)):
        return True  # "make a list of ...", "bring me a summary"
    if head[0] not in COMMAND_VERBS:
        return False
    return head[0] not in NOUN_LIKE_COMMANDS or len(head) == 1 or head[1] not in NOT_AFTER_VERB


def labelled_prompts() -> list[dict]:
    """The prompts the classifier was tuned on, each {"prompt", "kind"} (atomlib/assets/prompts_labelled.jsonl;
    the test suite keeps a held-out set of its own)."""
    text = resources.files("atomlib").joinpath("assets/prompts_labelled.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def classify_prompt(text: str) -> str:
    """"creative", "question", "command" or "thematic" (see the module docstring for the rules)."""
    norm = _normalise(text or "")
    words = _words(norm)
    if not words:
        return "question" if "?" in norm else "thematic"
    head, polite = _strip_polite(list(words))
    info_question = words[0] in WH_WORDS - {"how", "what"} or (not polite and head == words and _aux_question(words))
    if words[0] in ("how", "what") and len(words) > 1 and words[1] == "about":
        info_question = False  # "how about a song" suggests, it does not ask
    elif words[0] in ("how", "what", "whats", "what's"):
        info_question = _is_question(words, norm)
    if not info_question and _asks_for_verse(head, norm):
        return "creative"
    if head and _commands(head) and not info_question:
        return "command"
    if head and (head[0] in COMPOSE_VERBS or _compose_phrase(head)) and not info_question:  # "write a summary"
        return "command"
    if polite and head != words and words[0] in ("help", "please", "kindly") and not _is_question(head, norm) \
            and head[0] not in SUBJECTS | {"i'm", "im"}:
        return "command"  # "help me understand the poem", "please the ..." : a request for a task
    if _is_question(words, norm):
        return "question"
    return "thematic"


# --- the topic of a request ------------------------------------------------------------------

_TOPIC_MARKERS = ("about", "regarding", "concerning", "called", "titled", "named", "abt")


def _key(token: str) -> str:
    return re.sub(r"[^\w']", "", unicodedata.normalize("NFKC", token).replace("\u2019", "'").lower())


def extract_topic(text: str) -> str:
    """The subject of a request, without the request words: "Could you write me a song about
    the raven at midnight?" -> "the raven at midnight"; "Write a poem" -> "" (no subject).
    A prompt that is no request (theme words, a question) comes back as it is."""
    tokens = [t for t in " ".join((text or "").split()).split() if _key(t)]
    keys = [_key(t) for t in tokens]
    head, _ = _strip_polite(list(keys))
    start = len(keys) - len(head)
    tokens, keys = tokens[start:], keys[start:]
    if not keys:
        return ""
    n = _compose_phrase(keys) or (1 if keys[0] in COMPOSE_VERBS | REQUEST_VERBS | COMMAND_VERBS else 0)
    desire = DESIRE.match(" ".join(keys))
    if not n and desire:
        n = len(desire.group(0).split())
    if not n and not any(k in VERSE_FORMS for k in keys[:1]) and not (keys[0] in INDEFINITE and
                                                                      any(k in VERSE_FORMS for k in keys[1:4])):
        return " ".join(tokens).strip(" ?!.,;:")  # not a request: the prompt is its own topic
    while n < len(keys) and keys[n] in ("me", "us", "them", "you", "up", "with", "out"):
        n += 1
    tokens, keys = tokens[n:], keys[n:]
    for i, k in enumerate(keys):
        if k in _TOPIC_MARKERS:
            tokens, keys = tokens[i + 1:], keys[i + 1:]
            break
    else:
        for i, k in enumerate(keys[:5]):
            if k in VERSE_FORMS:
                j = i + 1
                if j < len(keys) and keys[j] in ("of", "on", "for", "to", "in", "abt"):
                    j += 1
                tokens, keys = tokens[j:], keys[j:]
                break
    while keys and keys[-1] in ("please", "pls", "plz", "thanks", "thx"):
        tokens, keys = tokens[:-1], keys[:-1]
    return " ".join(tokens).strip(" ?!.,;:")


def classifier_scores(records: list[dict] | None = None) -> list[dict]:
    """The classifier on labelled prompts (default: labelled_prompts()), one row per prompt:
    its prompt, labelled kind, predicted kind and whether they agree."""
    rows = []
    for r in labelled_prompts() if records is None else records:
        predicted = classify_prompt(r["prompt"])
        rows.append({"prompt": r["prompt"], "kind": r["kind"], "predicted": predicted, "correct": predicted == r["kind"]})
    return rows
