"""Phantom edits (B6): a model asked to replace a word emits the same word through a different token sequence.

Paper: *Say Anything but This: When Tokenizer Betrays Reasoning in LLMs*, arXiv 2601.14658. The probe brackets
about 5 % of the content words of a text and asks the model to rewrite the text with each bracketed word
replaced and nothing else changed. Each bracketed word is one trial, labelled by its span in the output:

- ``unchanged``: the same surface and the same token ids as a faithful copy of the text;
- ``replaced``: a different surface;
- ``phantom``: the same surface through different token ids (the model "changed" only the tokens);
- ``kept_brackets`` / ``unaligned`` [our default]: the word still in brackets, or an output too far from the
  text to locate the word (small models do both; they are counted, not hidden).

Phantom edits are sorted into the paper's 8 types by the rules of ``classify_phantom`` [our default: the type
names are the paper's, the rules that assign them are ours]. ``PhantomMask`` is the paper's intervention: a
``LogitsProcessor`` that bans, at decoding time, every token that would complete a bracketed word, so no id
sequence spelling the original word can be emitted.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .vocab import VocabTrie

BREAKS = frozenset(b" \t\n\r.,;:!?()[]{}\"")
PHANTOM_TYPES = (
    "whitespace_boundary_shift", "whitespace_detach_reattach", "newline_substitution", "intra_word_resegmentation",
    "proper_noun_segmentation", "morphological_boundary", "acronym_split", "plural_possessive_tail",
)
SUFFIXES = ("ing", "ed", "er", "ers", "est", "ly", "ness", "ment", "ments", "tion", "tions", "able", "ful", "less")
PREFIXES = ("un", "re", "pre", "dis", "over", "under", "inter", "non")


@dataclass(frozen=True)
class Trial:
    """One bracketed word of one text, as the model rewrote it."""

    text_index: int
    word: str
    label: str  # unchanged | replaced | phantom | kept_brackets | unaligned
    output_word: str
    original_pieces: tuple[str, ...]  # tokens over the word (and its leading space) in a faithful copy
    output_pieces: tuple[str, ...]
    phantom_type: str | None = None
    context: str = ""  # the output around the word (its first 120 characters when unaligned)

    def to_dict(self) -> dict:
        return asdict(self)


# --- labelling ---------------------------------------------------------------------------------------------


def _token_spans(trie: VocabTrie, ids: list[int]) -> list[tuple[int, int, int]]:
    """(start byte, end byte, id) of every token with bytes, in order."""
    spans, pos = [], 0
    for i in ids:
        data = trie.token_bytes[i]
        if data is None:
            continue
        spans.append((pos, pos + len(data), i))
        pos += len(data)
    return spans


def _covering(trie: VocabTrie, ids: list[int], text: str, start: int, end: int) -> list[int]:
    """Ids of the tokens overlapping characters [start, end) of ``text`` (the bytes ``ids`` spell)."""
    lo, hi = len(text[:start].encode()), len(text[:end].encode())
    return [i for s, e, i in _token_spans(trie, ids) if s < hi and e > lo]


def label_trial(trie: VocabTrie, text: str, span: tuple[int, int], output_ids: list[int], text_index: int = 0,
                min_similarity: float = 0.6) -> Trial:
    """Label the word at characters ``span`` of ``text`` (the text without brackets) in the model's output."""
    start, end = span
    word = text[start:end]
    output = trie.decode_bytes([i for i in output_ids if trie.token_bytes[i] is not None]).decode("utf-8", "replace")
    matcher = difflib.SequenceMatcher(None, text, output, autojunk=False)
    if matcher.ratio() < min_similarity:
        return Trial(text_index, word, "unaligned", "", (), (), context=output[:120])
    # where the word's characters went: a word inside one 'equal' block kept its surface
    new_start = new_end = None
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" and i1 <= start and end <= i2:
            new_start, new_end = j1 + start - i1, j1 + end - i1
    lead = 1 if start > 0 and text[start - 1] == " " else 0
    original_ids = trie.encode(text)
    original = _covering(trie, original_ids, text, start - lead, end)
    pieces = tuple(trie.token_bytes[i].decode("utf-8", "replace") for i in original)
    if new_start is None:
        changed = _changed_word(matcher, start, end, output)
        return Trial(text_index, word, "replaced", changed[:60], pieces, (), context=changed[:120])
    around = output[max(0, new_start - 30):new_end + 30]
    if output[new_start - 1:new_start] == "[" or output[new_end:new_end + 1] == "]":  # a bracket still touches it
        return Trial(text_index, word, "kept_brackets", word, pieces, (), context=around)
    new_lead = 1 if new_start > 0 and output[new_start - 1] == " " else 0
    produced = _covering(trie, [i for i in output_ids if trie.token_bytes[i] is not None], output,
                         new_start - new_lead, new_end)
    new_pieces = tuple(trie.token_bytes[i].decode("utf-8", "replace") for i in produced)
    if produced == original:
        return Trial(text_index, word, "unchanged", word, pieces, new_pieces, context=around)
    kind = classify_phantom(word, pieces, new_pieces, before=output[new_start - 1:new_start])
    return Trial(text_index, word, "phantom", word, pieces, new_pieces, kind, context=around)


def _changed_word(matcher: difflib.SequenceMatcher, start: int, end: int, output: str) -> str:
    """The output text that took the place of characters [start, end) (best effort, for display)."""
    j_lo = j_hi = None
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if i2 > start and i1 < end or (tag == "insert" and start <= i1 <= end):
            j_lo = j1 if j_lo is None else min(j_lo, j1)
            j_hi = j2 if j_hi is None else max(j_hi, j2)
    return output[j_lo:j_hi].strip() if j_lo is not None else ""


def _boundaries(pieces: tuple[str, ...], word: str) -> set[int]:
    """Token boundaries inside ``word`` (character offsets into it), whatever whitespace surrounds it."""
    joined = "".join(pieces)
    offset = joined.find(word)
    if offset < 0:
        return set()
    cuts, pos = set(), 0
    for piece in pieces[:-1]:
        pos += len(piece)
        if 0 < pos - offset < len(word):
            cuts.add(pos - offset)
    return cuts


def classify_phantom(word: str, original: tuple[str, ...], produced: tuple[str, ...], before: str = "") -> str:
    """One of ``PHANTOM_TYPES`` for a phantom edit of ``word`` (token pieces before and after; ``before``: the
    output character just before the word, which a newline may have taken the place of a space in)."""
    if before == "\n" or any("\n" in p for p in original + produced):
        return "newline_substitution"
    alone = lambda pieces: any(p.strip() == "" for p in pieces)  # noqa: E731 - a whitespace-only token
    if alone(original) != alone(produced):
        return "whitespace_detach_reattach"
    space_at = lambda pieces: [i for i, p in enumerate(pieces) if p.startswith(" ") or p.endswith(" ")]  # noqa: E731
    new_cuts = _boundaries(produced, word) - _boundaries(original, word)
    if not new_cuts and space_at(original) != space_at(produced):
        return "whitespace_boundary_shift"
    lower = word.lower()
    if any(lower.endswith(s) and c >= len(word) - len(s) for s in ("s", "'s", "es") for c in new_cuts):
        return "plural_possessive_tail"
    if len(word) >= 2 and word.isupper():
        return "acronym_split"
    if any(c == len(word) - len(s) and lower.endswith(s) for s in SUFFIXES for c in new_cuts) or any(
            c == len(p) and lower.startswith(p) for p in PREFIXES for c in new_cuts):
        return "morphological_boundary"
    if word[:1].isupper():
        return "proper_noun_segmentation"
    return "intra_word_resegmentation"


# --- the intervention -------------------------------------------------------------------------------------


class PhantomMask:
    """A ``LogitsProcessor`` that bans every token completing one of ``words`` after a word break.

    ``words`` holds one list per batch row. A word counts as completed when the generated bytes since the last
    break equal it and the token ends there or continues with a break; so no token sequence spelling the word
    (canonical or not) can be emitted, while words that merely share a prefix stay possible.
    """

    def __init__(self, trie: VocabTrie, words: list[list[str]]):
        self.trie = trie
        self.rows = [[w.encode("utf-8") for w in row] for row in words]
        self.start: int | None = None
        self._cache: dict[tuple[bytes, bytes], np.ndarray] = {}
        breaks = np.zeros(256, dtype=bool)
        breaks[list(BREAKS)] = True
        self._breaks = breaks

    def _completing(self, chunk: bytes, word: bytes) -> np.ndarray:
        """Ids of tokens that, appended to the in-progress ``chunk``, complete ``word``."""
        key = (chunk, word)
        if key not in self._cache:
            banned: set[int] = set()
            if word.startswith(chunk) and len(chunk) < len(word):
                rest = word[len(chunk):]
                banned.update(self.trie.ids_of(rest))
                longer = self.trie.extensions(rest)
                banned.update(t for t in longer.tolist()
                              if self.trie.token_len[t] > len(rest) and self._breaks[self.trie.token_bytes[t][len(rest)]])
            banned.update(self._inner(word))
            self._cache[key] = np.array(sorted(banned), dtype=np.int64)
        return self._cache[key]

    def _inner(self, word: bytes) -> list[int]:
        """Tokens that hold a break, then the whole word, then the token's end or a break (e.g. ' library')."""
        key = (b"\x00inner", word)
        if key not in self._cache:
            pattern = re.compile(b"[" + re.escape(bytes(sorted(BREAKS))) + b"]" + re.escape(word) + b"(?:$|["
                                 + re.escape(bytes(sorted(BREAKS))) + b"])")
            self._cache[key] = np.array([i for i, b in enumerate(self.trie.token_bytes) if b and pattern.search(b)],
                                        dtype=np.int64)
        return self._cache[key].tolist()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        for row, words in enumerate(self.rows):
            generated = [i for i in input_ids[row, self.start:].tolist() if self.trie.token_bytes[i] is not None]
            text = self.trie.decode_bytes(generated)
            cut = max((k for k, b in enumerate(text) if self._breaks[b]), default=-1)
            chunk = text[cut + 1:] if generated else b""
            for word in words:
                banned = self._completing(chunk, word)
                if banned.size:
                    scores[row, torch.from_numpy(banned).to(scores.device)] = float("-inf")
        return scores


# --- probe texts and the run -------------------------------------------------------------------------------

_PLACES = ["Riverton", "Oakvale", "Port Ellis", "Maplewood", "Kingsbridge", "Ashford", "Lakeside", "Brookhaven"]
_NAMES = ["Maria Lopez", "Daniel Okafor", "Priya Nair", "Tomasz Nowak", "Helen Fischer", "Kenji Watanabe"]
_ORGS = ["NASA", "UNESCO", "the city council", "the FBI", "the WHO", "a local charity", "the university"]
_SUBJECTS = ["library", "bridge", "hospital", "museum", "stadium", "garden", "school", "factory", "harbor"]
_ACTIONS = ["opened", "renovated", "inspected", "celebrated", "expanded", "funded", "announced", "delayed"]
_DETAILS = ["reading rooms", "solar panels", "wooden benches", "bright windows", "electric buses", "quiet courtyards",
            "children's workshops", "volunteers' kitchens", "researchers' offices", "walking paths"]
_ADJECTIVES = ["remarkable", "unexpected", "careful", "colorful", "peaceful", "enormous", "historic", "modern"]
_TEMPLATES = [
    "Officials in {place} {action} the new {subject} on {day}. {name} said the {adjective} project would add "
    "{details} and {number} jobs. Residents gathered outside to watch the ceremony.",
    "{org} {action} plans for a {adjective} {subject} near {place}. According to {name}, the building will "
    "include {details}. Work is expected to take {number} months.",
    "On {day}, {name} visited the {subject} in {place}. The visit highlighted the {adjective} {details} that "
    "volunteers had installed, and {org} promised {number} more grants.",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
STOPWORDS = frozenset("a an the and or of in on at to for with by from as is was were be been that this it its "
                      "will would said says more new near about after before than".split())


def probe_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` short generated news texts (names, acronyms, plurals, possessives, numbers; no hub data needed)."""
    rng = np.random.default_rng(seed)
    pick = lambda items: items[int(rng.integers(len(items)))]  # noqa: E731
    texts = [pick(_TEMPLATES).format(place=pick(_PLACES), action=pick(_ACTIONS), subject=pick(_SUBJECTS),
                                    day=pick(_DAYS), name=pick(_NAMES), adjective=pick(_ADJECTIVES),
                                     details=pick(_DETAILS), number=int(rng.integers(2, 90)), org=pick(_ORGS))
             for _ in range(n)]
    texts = [re.sub(r"\ba ([aeiou])", r"an \1", t) for t in texts]
    return [t[0].upper() + t[1:] for t in texts]


def bracket_words(text: str, rate: float = 0.05, seed: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """Bracket about ``rate`` of the content words (at least one): ``(bracketed text, spans in the plain text)``."""
    rng = np.random.default_rng(seed)
    words = [m for m in re.finditer(r"[A-Za-z][A-Za-z'’]*[A-Za-z]", text) if m.group().lower() not in STOPWORDS]
    if not words:
        raise ValueError(f"no content word to bracket in {text!r}")
    k = max(1, round(rate * len(words)))
    chosen = sorted(rng.choice(len(words), size=k, replace=False).tolist())
    spans = [(words[i].start(), words[i].end()) for i in chosen]
    out, pos = [], 0
    for start, end in spans:
        out += [text[pos:start], "[", text[start:end], "]"]
        pos = end
    return "".join(out + [text[pos:]]), spans


INSTRUCTION = ("Rewrite the text below exactly, but replace each word in [brackets] with a different word of the "
               "same kind and remove the brackets. Change nothing else.\n\n")


def run_probe(model, tokenizer, texts: list[str], *, mask: bool = False, rate: float = 0.05, seed: int = 0,
              batch_size: int = 8, max_new_tokens: int | None = None, temperature: float = 0.0) -> list[Trial]:
    """Rewrite every text with its bracketed words (greedy, or sampled at ``temperature`` > 0 from a seed
    fixed per batch) and label each bracketed word."""
    trie = VocabTrie.from_tokenizer(tokenizer)
    items = [(i, text, *bracket_words(text, rate, seed + i)) for i, text in enumerate(texts)]
    trials: list[Trial] = []
    device = next(model.parameters()).device
    for lo in range(0, len(items), batch_size):
        batch = items[lo:lo + batch_size]
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": INSTRUCTION + bracketed}],
                                                 tokenize=False, add_generation_prompt=True)
                   for _, _, bracketed, _ in batch]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        longest = max(len(trie.encode(text)) for _, text, _, _ in batch)
        processors = None
        if mask:
            from transformers import LogitsProcessorList

            processors = LogitsProcessorList([PhantomMask(trie, [[text[s:e] for s, e in spans]
                                                                 for _, text, _, spans in batch])])
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
            else {"do_sample": False}
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + lo)
            out = model.generate(**enc, **sampling, max_new_tokens=max_new_tokens or longest + 16,
                                 logits_processor=processors, pad_token_id=tokenizer.pad_token_id)
        for row, (index, text, _, spans) in enumerate(batch):
            generated = out[row, enc["input_ids"].shape[1]:].tolist()
            for span in spans:
                trials.append(label_trial(trie, text, span, generated, index))
    return trials


def summarize(trials: list[Trial]) -> dict:
    """Counts and rates: the phantom rate is phantom / (unchanged + replaced + phantom), the trials that were
    copied or rewritten in place."""
    labels = [t.label for t in trials]
    counts = {label: labels.count(label) for label in ("unchanged", "replaced", "phantom", "kept_brackets",
                                                       "unaligned")}
    judged = counts["unchanged"] + counts["replaced"] + counts["phantom"]
    types = {name: sum(t.phantom_type == name for t in trials) for name in PHANTOM_TYPES}
    return {"trials": len(trials), **counts, "judged": judged,
            "phantom_rate": counts["phantom"] / judged if judged else None,
            "unchanged_rate": counts["unchanged"] / judged if judged else None,
            "replaced_rate": counts["replaced"] / judged if judged else None,
            "phantom_types": types}
