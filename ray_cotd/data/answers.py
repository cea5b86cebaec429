"""Splitting teacher/student text into rationale + answer, and comparing answers.

The one parser for "... The answer is X" text (STYLE 6, 13): annotation, training, evaluation and
serving all import `split_output`, `normalize_answer` and `join_rationale_answer` from here.
Pure functions: no torch, no Ray.

Strict parsing (the default) accepts only the marker, in these shapes (case-insensitive, any
whitespace between the words, optional markdown bold around it, optional colon after it):

    The answer is X            -> marker "The answer is"
    Therefore, the answer is X -> marker "Therefore, the answer is" (also Thus, So, Hence,
                                  Consequently, Finally; with or without the comma)
    The final answer is X      -> marker "The final answer is" (MATH / Minerva; also after a
                                  connective)
    a last line "#### X"       -> marker "####" (GSM8K's worked solutions)
    a last line "Answer: X"    -> marker "Answer:" ("Final Answer: X": "Final answer:"; any case,
                                  bold or not; only the last line counts)

The LAST marker wins: teachers often say "the answer is true." mid-text and then restate it, and a
reply that reasons "... the answer is 5" and ends "Answer: 6" answers 6.
A stray markup tag at either end of the rationale (`<Solution Path>`, `<br>`, `<explanation>`) is
dropped; markdown bold, quotes, a stray `<answer>` tag and the trailing period are dropped from
the answer. Glued numbered steps inside the rationale ("which is 290.2. Note that") are left as
they are: the answer is read only from after the marker, never by splitting the text on ".".

Lenient parsing (`lenient=True`, opt-in, needs an `answer_type`) is for text without any strict
marker, e.g. LLaMA-70B StrategyQA rationales ending "...Thus answering True", "verdictFalse" or
"TheanswerisFalse" (spaces lost). It reads the last typed answer within the final 120 characters:

    boolean          -> marker "final-boolean"   the last "true"/"false" (glued words included)
    multiple_choice  -> marker "trailing-choice" a capital letter A-E ending the text ("...was D",
                                                 "...her B: classroom.")
    numeric          -> marker "final-number"    the last number in the text

Lenient results are guesses: annotation keeps them out of training data unless asked, and reports
count them by marker so one can see how many came from a fallback.

Numeric rules (`normalize_answer(..., "numeric")`): "$145", "145", "145.0", "145." are "145";
thousands separators need groups of three ("1,450" -> "1450"; "1,45" is unreadable, never 45, and
no number is read out of the middle of a run of digits and separators); unicode minus
(U+2212) and en dash are minus signs; a trailing "%" is dropped ("50%" -> "50", SVAMP golds carry
no percent sign); a fraction "a/b" is read as its value ("1/2" -> "0.5"; a non-terminating one stays
reduced, "2/6" -> "1/3"); trailing unit words are allowed ("16 pounds" -> "16") but a second number
is not ("13 is incorrect, the correct answer is 68" is unreadable). After the marker the value is
the one number of the answer's first clause (after its last "=": "79 - 75 = 4" is 4); a clause
with two ("5 and 6", "4 - 3") is unreadable rather than its first. Values compare exactly; there
is no float tolerance. LaTeX is read where a number is expected: "\\frac{3}{4}" (also \\dfrac,
\\tfrac) is 3/4, "1{,}000" is 1000, and "\\$", "\\%", "^\\circ", "\\!" and "\\text{...}" units
are dropped.

Golds: `final_answer` reads the final answer out of a gold that is a worked solution ("... #### 72",
"...\\nAnswer: 7", "... \\boxed{\\frac{3}{4}}", "... The answer is 5"); the readers apply it to every
gold.

Boolean: true/false/yes/no at the start, alone or followed by punctuation or "because"/"since"/
"as" ("Yes because it melts" is true; "True if we assume so" is unreadable).

Multiple choice: a label at the start, letters A-J or numbers 1-10, bare or in parentheses, alone
or followed by ":", ".", ")" or "," and the option's text ("B", "(B)", "B: populated areas",
"(C) 12 km", "(2)", "2. copper"), or after "option"/"choice". An abbreviation is not a label
("e.g. A" is unreadable, not E). A bare number reads as a label only when the type is already
multiple_choice: `infer_answer_type` reads bare numbers as numeric. An answer that is an option's
text rather than its label is mapped to the label by `ray_cotd.data.choices` when the question
lists its options (scoring.score does it).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal, get_args

from ray_cotd.data.errors import DataError

ANSWER_MARKER = "The answer is"

AnswerType = Literal["numeric", "boolean", "multiple_choice", "text"]
ANSWER_TYPES: tuple[str, ...] = get_args(AnswerType)

PARSE_FAILURE_REASONS = (
    "not_text",  # the input is not a str (e.g. None from a missing column)
    "empty",  # empty or whitespace only
    "no_marker",  # no strict marker, and no lenient fallback asked for or found
    "empty_answer",  # a marker with nothing readable after it ("The answer is <answer>")
    "empty_rationale",  # require_rationale=True and nothing before the marker
    "unreadable_answer",  # answer_type given and the text after the marker is not of that type
)

_CONNECTIVES = ("therefore", "thus", "so", "hence", "consequently", "finally")
# "The final answer is" (MATH / Minerva). Not "The correct answer is": LLaMA's CommonsenseQA rationales
# say "The correct answer is the one that ..." mid-reasoning, which is no answer.
_ADJECTIVES = ("final",)
# The markers of a last line: "#### X" (GSM8K), "Answer: X" (many instruction and eval sets), "Final Answer: X".
_LAST_LINE_MARKERS = ("####", "Answer:", "Final answer:")
STRICT_MARKERS = (
    *(f"The {adj}answer is" for adj in ("", *(a + " " for a in _ADJECTIVES))),
    *(f"{conn.capitalize()}, the {adj}answer is" for conn in _CONNECTIVES
      for adj in ("", *(a + " " for a in _ADJECTIVES))),
    *_LAST_LINE_MARKERS,
)
LENIENT_MARKERS = {"boolean": "final-boolean", "multiple_choice": "trailing-choice", "numeric": "final-number"}

# Letters read as multiple-choice options: A-J covers CommonsenseQA (A-E), ARC/MMLU (A-D) and
# MMLU-Pro (A-J). A bare letter only counts when it stands alone ("B", "(B)", "B: ...", "B. ...").
# Numbered options ("(1)".."(4)" in some ARC-style sets) are labels 1-10.
CHOICE_LETTERS = "ABCDEFGHIJ"
CHOICE_LABEL = rf"(?:[{CHOICE_LETTERS}]|10|[1-9])"

# No word boundary before "the": the release often glues the marker to the rationale's last word
# ("= 252 piecesThe answer is 252", "our conclusionthe answer is False").
_MARKER_RE = re.compile(
    r"(?:\b(?P<conn>" + "|".join(_CONNECTIVES) + r")\b\s*,?\s*)?"
    r"[*_]{0,2}the\s+(?:(?P<adj>" + "|".join(_ADJECTIVES) + r")\s+)?answer\s+is(?![a-z])[*_]{0,2}\s*:?",
    re.IGNORECASE,
)
# A markup tag at an end of the rationale: <Solution Path>, </Solution Path>, <br />, <explanation>.
_EDGE_TAG = r"</?[A-Za-z][A-Za-z ]{0,40}/?>"
_LEADING_TAGS_RE = re.compile(rf"^(?:\s*{_EDGE_TAG})+")
_TRAILING_TAGS_RE = re.compile(rf"(?:{_EDGE_TAG}\s*)+$")
_ANSWER_EDGE_JUNK = " \t*_`'\"<>"

_MINUS = "-\u2212\u2013"  # ASCII hyphen-minus, unicode minus, en dash
# Never a number out of the middle of a run of digits and separators: "1,45" is not 45, "3.2.1" not 2.
_NUMBER = (
    rf"(?<![\d.,])(?<!\d[.,])(?P<sign>[{_MINUS}])?\s*[$€£]?\s*"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)"
    r"(?![\d,]*\d)"
)
_NUMBER_RE = re.compile(_NUMBER)
_NUMERIC_RE = re.compile(
    rf"^[$€£]?\s*{_NUMBER}\s*(?P<pct>%)?(?:\s*[A-Za-z][A-Za-z\s'-]*)?\.?$",
)
# A lone decimal with one fractional digit followed by ". Capital" is a number glued to the next
# numbered step ("which is 290.2. Note that"): read as 290 when scanning free text.
_GLUED_STEP_RE = re.compile(r"^\d+\.\d\.\s+[A-Z]")
_BOOLEAN_WORDS = {"true": "true", "yes": "true", "false": "false", "no": "false"}
_BOOLEAN_RE = re.compile(r"^(?P<word>true|false|yes|no)(?=$|\s*[.,;:!)]|\s+(?:because|since|as)\b|\s*$)",
                         re.IGNORECASE)
# A period after the label must not start an abbreviation: "e.g. A" is not option E.
_CHOICE_RE = re.compile(
    rf"^(?:(?:option|choice)\s+)?\(?(?P<letter>{CHOICE_LABEL})\)?(?=$|\s*[:),]|\s*\.(?![A-Za-z])|\s*$)",
    re.IGNORECASE,
)
_BARE_NUMBER_RE = re.compile(r"\d+\.?")
# GSM8K ends a worked solution with a last line "#### <answer>"; only a last line counts, so a
# markdown heading ("#### Step 1") earlier in a reply is never read as an answer.
_HASHES_RE = re.compile(r"(?:^|\n)[ \t]*####[ \t]*(?P<answer>[^\n#]*\S)[ \t]*\s*$")
# A last line "Answer: X" or "Final Answer: X" (bold or not); like "####", only a last line counts.
_ANSWER_LINE_RE = re.compile(
    r"(?:^|\n)[ \t]*[*_]{0,2}(?P<final>final[ \t]+)?answer[*_]{0,2}[ \t]*:[*_]{0,2}[ \t]*(?P<answer>[^\n]*\S)\s*$",
    re.IGNORECASE,
)
_PUNCTUATION = frozenset(string.punctuation)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LATEX_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_LATEX_TEXT_RE = re.compile(r"\\(?:text|mbox|mathrm)\s*\{([^{}]*)\}")
_LATEX_DEGREES_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
# Lenient fallbacks only look this far back from the end: an answer stated earlier and then
# argued against must not be picked up.
_LENIENT_WINDOW = 120
_FINAL_BOOLEAN_RE = re.compile(r"(?<!un)(?P<word>true|false)(?![a-z])", re.IGNORECASE)
_TRAILING_CHOICE_RE = re.compile(
    rf"(?<![A-Za-z])\(?(?P<letter>[{CHOICE_LETTERS[:5]}])\)?(?::\s*[^.:\n]{{0,80}})?\.?\s*$"
)


@dataclass(frozen=True)
class ParsedOutput:
    """A rationale and the answer after the marker.

    `marker` is one of STRICT_MARKERS, or a LENIENT_MARKERS value when a fallback found the answer.
    `answer` is cleaned text ("145.0", "True", "B: populated areas"); with an answer_type it is the
    typed token only ("145.0", "True", "B"). Compare answers with `answers_match`, not ==.
    """

    rationale: str
    answer: str
    marker: str

    @property
    def lenient(self) -> bool:
        return self.marker not in STRICT_MARKERS


@dataclass(frozen=True)
class ParseFailure:
    """Why a text could not be split; `reason` is one of PARSE_FAILURE_REASONS."""

    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in PARSE_FAILURE_REASONS:
            raise DataError(f"unknown parse failure reason {self.reason!r}", choices=PARSE_FAILURE_REASONS)


def split_output(
    text: str,
    *,
    answer_type: AnswerType | None = None,
    lenient: bool = False,
    require_rationale: bool = False,
) -> ParsedOutput | ParseFailure:
    """Split "<rationale> The answer is <answer>" at the last marker. Never raises on any input.

    answer_type: when given, the answer must read as that type (else "unreadable_answer") and
        `answer` is the typed token; "text" keeps the whole cleaned answer.
    lenient: fall back to the type-aware endings described in the module docstring when there is
        no strict marker. Has no effect without a non-text answer_type.
    require_rationale: an empty rationale ("The answer is 5") is "empty_rationale" instead of a
        ParsedOutput with rationale "". Annotation wants True; evaluating answer-only students False.
    """
    if not isinstance(text, str):
        return ParseFailure("not_text", type(text).__name__)
    if not text.strip():
        return ParseFailure("empty")

    found = _last_marker(text)
    if found is None:
        if lenient and answer_type in LENIENT_MARKERS:
            guessed = _lenient_split(text, answer_type)
            if guessed is not None:
                return _with_rationale_check(guessed, require_rationale)
        return ParseFailure("no_marker", _tail(text))
    start, answer, marker = found
    return _typed_split(text[:start], answer, marker, answer_type, require_rationale, text)


def _last_marker(text: str) -> tuple[int, str, str] | None:
    """(where the rationale ends, the text after the marker, the marker) of the marker that comes
    last: "The answer is" (any connective or adjective) anywhere, or a last line "#### X" or
    "Answer: X"; None when there is none."""
    found = []
    last = None
    for last in _MARKER_RE.finditer(text):
        pass
    if last is not None:
        conn, adj = last.group("conn"), last.group("adj")
        the = f"the {adj.lower()} answer is" if adj else "the answer is"
        marker = f"{conn.capitalize()}, {the}" if conn else the[0].upper() + the[1:]
        found.append((last.start(), text[last.end():], marker))
    hashes = _HASHES_RE.search(text)
    if hashes is not None:
        found.append((hashes.start(), hashes.group("answer"), "####"))
    line = _ANSWER_LINE_RE.search(text)
    if line is not None:
        found.append((line.start(), line.group("answer"), "Final answer:" if line.group("final") else "Answer:"))
    return max(found, key=lambda f: f[0]) if found else None


def _typed_split(rationale: str, after: str, marker: str, answer_type: AnswerType | None, require_rationale: bool,
                 text: str) -> ParsedOutput | ParseFailure:
    """split_output's result once the marker is found: `after` is the text after it."""
    answer = _clean_answer(after)
    if not answer:
        return ParseFailure("empty_answer", _tail(text))
    if answer_type is not None and answer_type != "text":
        token = _typed_token(answer, answer_type)
        if token is None:
            return ParseFailure("unreadable_answer", answer[:80])
        answer = token
    parsed = ParsedOutput(_clean_rationale(rationale), answer, marker)
    return _with_rationale_check(parsed, require_rationale)


def parse_answer(answer_text: str, answer_type: AnswerType | None = None) -> ParsedOutput | ParseFailure:
    """Parse a student's stage-2 text (what it wrote after the marker, e.g. " 145.") with the one
    parser, as if the marker preceded it."""
    return split_output(ANSWER_MARKER + " " + answer_text.strip(), answer_type=answer_type)


def normalize_answer(raw: str | None, answer_type: AnswerType) -> str | None:
    """Canonical form of an answer, or None when it cannot be read as `answer_type`.

    numeric: "145" (see the module docstring for the rules); boolean: "true"/"false" from
    True/true/yes/Yes./False/no; multiple_choice: "B" from B, b, (B), "B: populated areas",
    "B. populated areas"; text: whitespace-collapsed, casefolded, trailing period dropped.
    """
    if answer_type not in ANSWER_TYPES:
        raise DataError(f"unknown answer type {answer_type!r}", choices=ANSWER_TYPES)
    if not isinstance(raw, str):
        return None
    text = _clean_answer(raw)
    if not text:
        return None
    if answer_type == "text":
        return " ".join(text.split()).casefold()
    if answer_type == "numeric":
        return _canonical_number(_without_latex(text))
    token = _typed_token(text, answer_type)
    if token is None:
        return None
    if answer_type == "boolean":
        return _BOOLEAN_WORDS[token.lower()]
    return token.upper()


def answers_match(pred: str | None, gold: str | None, answer_type: AnswerType) -> bool:
    """True when both normalize to the same canonical answer; False when either cannot."""
    pred_norm = normalize_answer(pred, answer_type)
    return pred_norm is not None and pred_norm == normalize_answer(gold, answer_type)


# The typed answer types in the order inference tries them (narrowest first), each with what a gold
# must look like to be one. A choice label may carry its option text ("B: populated areas",
# "(C) 12 km"); a bare number is numeric, never a label, so "(2)" is a label and "2" a number.
_GOLD_CHECKS: tuple[tuple[AnswerType, Callable[[str], bool]], ...] = (
    ("boolean", lambda v: bool(re.fullmatch(r"(?:true|false|yes|no)\.?", v, re.IGNORECASE))),
    ("multiple_choice",
     lambda v: normalize_answer(v, "multiple_choice") is not None and not _BARE_NUMBER_RE.fullmatch(v)),
    ("numeric", lambda v: normalize_answer(v, "numeric") is not None),
)


def infer_answer_type(golds: Iterable[str | None], *, min_share: float = 1.0) -> AnswerType:
    """The narrowest type the golds read as: boolean, then multiple_choice, numeric, else text.

    multiple_choice: letter or number labels, bare or in parentheses, with or without the option
    text ("B", "(C)", "(2)", "B: populated areas"); bare numbers ("2") are numeric.
    None and empty values are ignored; with nothing left the type is "text".
    min_share: the share of values that must read as the type (1.0 = all). Inspecting parsed
        teacher answers, where a few are garbage, uses e.g. 0.95.
    """
    values = [g.strip() for g in golds if isinstance(g, str) and g.strip()]
    if not values:
        return "text"
    for answer_type, reads_as in _GOLD_CHECKS:
        if sum(reads_as(v) for v in values) >= min_share * len(values):
            return answer_type
    return "text"


@dataclass(frozen=True)
class TypeFit:
    """The answer type a set of golds is scored with, and how well the golds fit it.

    answer_type: the narrowest type every gold reads as; else the typed type most golds read as
        when at least half do (ties go to the narrower); else "text".
    not_fitting: golds that do not read as answer_type (0 unless golds are mixed); evaluation
        compares those as text and says how many there were.
    fits: for each typed answer type, how many golds read as it. n: golds counted (non-empty).
    """

    answer_type: AnswerType
    not_fitting: int
    n: int
    fits: dict[str, int]


def fit_answer_type(golds: Iterable[str | None]) -> TypeFit:
    """The answer type to score a set with (see TypeFit), never silently text when most golds have
    a type: 58 letter labels and 2 malformed golds are multiple_choice with 2 not fitting."""
    values = [g.strip() for g in golds if isinstance(g, str) and g.strip()]
    fits = {answer_type: sum(reads_as(v) for v in values) for answer_type, reads_as in _GOLD_CHECKS}
    best = max(fits, key=lambda t: fits[t])  # the first (narrowest) of equal counts
    if values and 2 * fits[best] >= len(values):
        return TypeFit(best, len(values) - fits[best], len(values), fits)
    return TypeFit("text", 0, len(values), fits)


def text_key(text: str) -> str:
    """A free-text answer as free-text answers are compared when scoring (SQuAD's normalization):
    lower case, no punctuation, no articles (a, an, the), single spaces. "The Eiffel Tower." and
    "eiffel tower" are one answer; so are "U.S." and "US"."""
    text = "".join(ch for ch in text.casefold() if ch not in _PUNCTUATION)
    return " ".join(word for word in text.split() if word not in ("a", "an", "the"))


def final_answer(gold: str) -> str:
    """The final answer of a gold that is a worked solution; any other gold as it is.

    >>> final_answer("Natalia sold 48/2 = 24 clips in May.\\n#### 72")   # GSM8K
    '72'
    >>> final_answer("So the sum is $\\\\boxed{\\\\frac{3}{4}}$.")          # MATH: the last \\boxed{}
    '\\\\frac{3}{4}'
    >>> final_answer("3 + 2 = 5. The answer is 5.")                   # the one parser's marker
    '5'
    >>> final_answer("3 + 4 = 7.\\nAnswer: 7")                         # a last line "Answer: X"
    '7'
    >>> final_answer("Paris")
    'Paris'
    """
    if not isinstance(gold, str):
        return gold
    found = _last_marker(gold)
    if found is not None and found[2] in _LAST_LINE_MARKERS:  # a last line says it
        answer = _clean_answer(found[1])
        return last_boxed(answer) or answer or gold
    boxed = last_boxed(gold)
    if boxed:
        return boxed
    if found is not None:
        parsed = split_output(gold)
        if isinstance(parsed, ParsedOutput):
            return parsed.answer
    return gold


def last_boxed(text: str) -> str | None:
    """What the last \\boxed{...} (or \\fbox{...}) of `text` holds, braces balanced; None if none."""
    starts = list(_BOXED_RE.finditer(text))
    if not starts:
        return None
    depth, begin = 1, starts[-1].end()
    for position in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[begin:position].strip() or None
    return None  # unbalanced: not a readable answer


def _without_latex(text: str) -> str:
    """`text` with the LaTeX of a typed number undone: \\frac{a}{b} -> a/b, 1{,}000 -> 1,000, and
    \\$, \\%, ^\\circ, \\!, \\text{unit} and $...$ delimiters unwrapped. Text with no backslash
    or brace comes back unchanged."""
    if "\\" not in text and "{" not in text and text.count("$") < 2:
        return text
    text = _LATEX_FRAC_RE.sub(r"\1/\2", text)
    text = _LATEX_TEXT_RE.sub(r" \1", text)
    text = _LATEX_DEGREES_RE.sub("", text)
    text = text.replace("{,}", ",").replace("\\!", "").replace("\\$", "$").replace("\\%", "%")
    text = text.replace("\\left", "").replace("\\right", "")
    if text.count("$") >= 2:  # math-mode delimiters, not a currency sign
        text = text.replace("$", "")
    return " ".join(text.split())


def without_restated_answer(rationale: str, answer: str) -> str | None:
    """`rationale` with no answer marker left in it, or None when dropping a final restatement of
    `answer` cannot get it there.

    `split_output` splits at the last marker, so the rationale it returns may hold another: in the
    release 533 of ~90k rationales do. About half restate the answer in their last sentence ("...
    Therefore, the answer is true.\n The answer is True"); the rest state an intermediate result
    ("2 + 5 = ? The answer is 7. There are 4 storks ..."), the gold ("since the answer is given as
    True, we will proceed") or contradict themselves. Trained as rationale, each puts an answer, and
    the marker that ends stage 1 at inference, into L_rationale.

    No marker: the rationale as given. One marker followed by `answer` alone (compared as text:
    case, quotes and the final period aside) and nothing else: the text before the marker, its
    connective ("Therefore,") and a dangling comma dropped. Anything else: None.
    """
    markers = list(_MARKER_RE.finditer(rationale))
    if not markers:
        return rationale
    restated = rationale[markers[0].end():]
    if len(markers) > 1 or len([line for line in restated.splitlines() if line.strip()]) != 1:
        return None
    if normalize_answer(restated, "text") != normalize_answer(answer, "text"):
        return None
    return _clean_rationale(rationale[: markers[0].start()]).rstrip(" ,;:")


def join_rationale_answer(rationale: str, answer: str) -> str:
    """The training target: f"{rationale}\\n{ANSWER_MARKER} {answer}." (exactly one "\\n").

    The separator is a single newline so that the marker starts a new token: question + rationale
    then tokenizes as a causal prefix of the full target, which CasCoD's rationale/answer split
    relies on. `rationale` is used as given (split_output returns it stripped; an empty one gives
    "\\nThe answer is X."); `answer` is stripped and loses one trailing period so that parsing the
    target back with split_output returns the same rationale and answer.
    """
    answer = " ".join(answer.split()).removesuffix(".").strip()
    if not answer:
        raise DataError("cannot build a training target with an empty answer", field="answer")
    return f"{rationale}\n{ANSWER_MARKER} {answer}."


def _with_rationale_check(parsed: ParsedOutput, require_rationale: bool) -> ParsedOutput | ParseFailure:
    if require_rationale and not parsed.rationale:
        return ParseFailure("empty_rationale", f"answer {parsed.answer!r}")
    return parsed


def _tail(text: str) -> str:
    return " ".join(text[-80:].split())


def _clean_rationale(text: str) -> str:
    text = _LEADING_TAGS_RE.sub("", text)
    text = _TRAILING_TAGS_RE.sub("", text.rstrip())
    return text.strip()


def _clean_answer(text: str) -> str:
    """First non-empty line, without markup, quotes, a stray <answer> tag or the final period."""
    text = re.sub(r"</?answer>", " ", text, flags=re.IGNORECASE).lstrip(" \t\n:")
    line = next((ln for ln in text.splitlines() if ln.strip(_ANSWER_EDGE_JUNK + ".")), "")
    line = " ".join(line.split()).strip(_ANSWER_EDGE_JUNK)
    if line.endswith(")") and "(" not in line:
        line = line[:-1]
    return line.rstrip(" .").strip(_ANSWER_EDGE_JUNK)


def _typed_token(answer: str, answer_type: str) -> str | None:
    """The answer token of that type at the start of cleaned answer text, as written."""
    if answer_type == "boolean":
        match = _BOOLEAN_RE.match(answer)
        return match.group("word") if match else None
    if answer_type == "multiple_choice":
        match = _CHOICE_RE.match(answer)
        return match.group("letter").upper() if match else None
    if answer_type == "numeric":
        # "79 - (24 + 51) = 79 - 75 = 4": the value after the last "=" of the first clause.
        clause = re.split(r"[.,;]\s|\n", _without_latex(answer), maxsplit=1)[0]
        clause = clause.rsplit("=", 1)[-1]
        numbers = list(_NUMBER_RE.finditer(clause))
        return numbers[0].group(0).strip() if len(numbers) == 1 else None  # "5 and 6" is neither
    return answer


def _canonical_number(text: str) -> str | None:
    match = _NUMERIC_RE.match(text.strip())
    if match is None:
        return None
    value = Fraction(match.group("num").replace(",", ""))
    if match.group("sign"):
        value = -value
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    decimal = Decimal(value.numerator) / Decimal(value.denominator)
    return format(decimal.normalize(), "f")


def _lenient_split(text: str, answer_type: str) -> ParsedOutput | None:
    """The last typed answer within the final _LENIENT_WINDOW characters, or None."""
    start = max(0, len(text.rstrip()) - _LENIENT_WINDOW)
    window = text[start:].rstrip()
    if answer_type == "boolean":
        found = None
        for found in _FINAL_BOOLEAN_RE.finditer(window):
            pass
        token = found.group("word") if found else None
    elif answer_type == "multiple_choice":
        found = _TRAILING_CHOICE_RE.search(window)
        token = found.group("letter") if found else None
    else:
        found = None
        for found in _NUMBER_RE.finditer(window):
            pass
        token = found.group(0).strip() if found else None
        if found and _GLUED_STEP_RE.match(window[found.start("num") :]):
            token = token.rsplit(".", 1)[0]
    if found is None:
        return None
    rationale = _clean_rationale(text[: start + found.start()])
    return ParsedOutput(rationale, token, LENIENT_MARKERS[answer_type])
