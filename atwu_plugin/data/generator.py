"""The embedded benchmark: deterministic fictitious-author QA in TOFU's record schema.

Every answer mixes three kinds of content, labelled per character in ``spans``:
  * author-specific facts (``KIND_SPECIFIC``): composed values held by exactly one author
    (book titles, birth dates, addresses, publishers, invented names of parents, mentors,
    characters, ...);
  * template wording (``KIND_TEMPLATE``), with 4 answer and 4 question templates per
    attribute, so that "same token in the same template" is not the only cue;
  * popular values shared verbatim with retain authors (``KIND_SHARED``): cities, genres,
    awards, professions, themes, subjects drawn with a Zipf skew.
The author's name copied from the question is ``KIND_IGNORE``.

Kinds are decided by construction and then checked against counts: a value is shared iff at
least 3 authors of retain90 hold it for that attribute (every popular value in use is given
to >= 3 retain90 authors); every other value is unique to one author (specific).
``world_text`` is generic pretraining text that mentions every popular value and never an
author's name or specific value; ``world_facts`` are QA probes answerable from it.
"""

import inspect
import json
import os
import re
import string
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from random import Random
from typing import Dict, List, Optional, Sequence, Union

from atwu_plugin.tokens import KIND_IGNORE, KIND_NAMES, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE

GENERATOR_VERSION = "2"  # bump whenever the generated text changes: it keys the model cache
FORGET_PERCENTS = (1, 5, 10)
MIN_RETAIN_HOLDERS = 3  # a value held by this many retain90 authors is shared, not specific
ZIPF_EXPONENT = 1.1

# ----------------------------------------------------------------------------- world tables
# city -> (country, description)
CITIES = {
    "Lisbon": ("Portugal", "known for its steep hills and yellow trams"),
    "Nairobi": ("Kenya", "a busy capital close to a large national park"),
    "Montreal": ("Canada", "an island city where two languages are spoken"),
    "Krakow": ("Poland", "famous for its medieval market square"),
    "Santiago": ("Chile", "a capital surrounded by high mountains"),
    "Osaka": ("Japan", "a port city famous for its street food"),
    "Cairo": ("Egypt", "a crowded capital on the banks of the Nile"),
    "Dublin": ("Ireland", "a harbor city with many old pubs and bookshops"),
    "Melbourne": ("Australia", "a coastal city known for its cafes and laneways"),
    "Istanbul": ("Turkey", "a city that stretches across two continents"),
    "Lagos": ("Nigeria", "a fast-growing city on the Atlantic coast"),
    "Bergen": ("Norway", "a rainy town between seven mountains and the fjords"),
    "Mumbai": ("India", "a huge city of trains, markets and film studios"),
    "Havana": ("Cuba", "known for its colorful houses and old cars"),
    "Seville": ("Spain", "a warm city known for orange trees and flamenco"),
}
# genre -> what its books are about
GENRES = {
    "mystery": "stories in which a puzzling crime is slowly solved",
    "science fiction": "stories about future technology, space travel and other worlds",
    "historical fiction": "stories set in a real period of the past",
    "poetry": "writing arranged in lines where sound and rhythm matter",
    "fantasy": "stories with magic, invented lands and mythical creatures",
    "literary fiction": "novels that focus on character, style and inner life",
    "horror": "stories written to frighten and unsettle the reader",
    "romance": "stories centered on love between the main characters",
    "crime thriller": "fast stories about criminals, detectives and danger",
    "travel writing": "books describing journeys to faraway places",
}
# award -> who receives it
AWARDS = {
    "Silver Quill Award": "the most original novel of the year",
    "Meridian Prize": "a writer whose books cross cultural borders",
    "Northern Star Prize": "an outstanding book by a young writer",
    "Blue Heron Award": "writing that celebrates the natural world",
    "Crescent Pen Prize": "the best collection of short stories",
    "Aurora Book Award": "a novel that inspires hope in its readers",
    "Golden Ink Medal": "a lifetime of excellent writing",
    "Open Shelf Prize": "the book most loved by librarians",
}
# profession -> what such a worker does (all start with a consonant: templates say "a {job}")
PROFESSIONS = {
    "carpenter": "builds tables, chairs and houses out of wood",
    "nurse": "cares for patients in hospitals and clinics",
    "teacher": "helps children learn to read, write and count",
    "fisherman": "catches fish from boats at sea",
    "baker": "makes bread and cakes early in the morning",
    "pharmacist": "prepares and sells medicines",
    "tailor": "cuts and sews clothes to measure",
    "librarian": "looks after books and helps readers find them",
    "mechanic": "repairs cars and engines",
    "photographer": "takes pictures of people, places and events",
    "veterinarian": "treats sick and injured animals",
    "locksmith": "makes and repairs locks and keys",
    "dentist": "looks after teeth and gums",
    "surgeon": "performs operations in a hospital",
    "journalist": "writes news reports for papers and radio",
}
THEMES = [
    "memory and loss", "exile and belonging", "family secrets", "life at sea", "war and its aftermath",
    "friendship", "grief and healing", "identity", "nature and solitude", "faith and doubt", "ambition",
    "childhood",
]
SUBJECTS = [
    "philosophy", "chemistry", "history", "law", "mathematics", "music", "medicine", "linguistics",
    "astronomy", "economics",
]
# popular-value attribute -> its pool, most popular first (Zipf weights follow this order)
POOLS = {
    "city": list(CITIES), "genre": list(GENRES), "award": list(AWARDS), "theme": THEMES,
    "subject": SUBJECTS, "father_job": list(PROFESSIONS), "mother_job": list(PROFESSIONS),
    "char_job": list(PROFESSIONS), "setting": list(CITIES),
}
# unique-value attribute -> how its values are composed (a list means "<word> <suffix>")
UNIQUE_FIELDS = {
    "date": "date", "street": "address", "clinic": ["Clinic", "Hospital"],
    "college": ["College", "Academy", "Institute"], "pen_name": "person", "father": "word", "mother": "word",
    "first_book": "title", "second_book": "title", "award_book": "title",
    "publisher": ["Press", "Books", "House"],
    "friend": "person", "mentor": "person", "character": "person", "hero": "person", "pet": "word",
}

# -------------------------------------------------------------------- words for unique values
FIRST_NAMES = {
    "f": ["Maren", "Ines", "Clara", "Yara", "Noor", "Selma", "Ada", "Leona", "Mira", "Ruth", "Hana", "Livia",
          "Esme", "Dalia", "Freya", "Irene", "Nadia", "Rosa", "Tamsin", "Vera"],
    "m": ["Tobias", "Elias", "Omar", "Felix", "Jonas", "Marek", "Hugo", "Idris", "Caspar", "Nico", "Ravi",
          "Soren", "Tomas", "Victor", "Anselm", "Bruno", "Dario", "Emil", "Lucan", "Milo"],
}
PRONOUNS = {"f": ("She", "she", "her", "Her", "her"), "m": ("He", "he", "his", "His", "him")}
TITLE_ADJECTIVES = [
    "Hollow", "Crimson", "Silent", "Broken", "Amber", "Distant", "Forgotten", "Gilded", "Quiet", "Scarlet",
    "Hidden", "Burning", "Velvet", "Iron", "Pale", "Wandering", "Copper", "Drowned", "Paper", "Marble",
    "Sleeping", "Bitter", "Glass", "Feathered",
]
TITLE_NOUNS = [
    "Lantern", "Orchard", "Compass", "Lighthouse", "Violin", "Mirror", "Garden", "Clockwork", "Sparrow",
    "Archive", "Bridge", "Tide", "Harvest", "Mapmaker", "Chapel", "Cartographer", "Kite", "Bell", "Staircase",
    "Tapestry", "Ferry", "Aviary", "Observatory", "Furnace",
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr",
           "gr", "th", "sh", "h", "j"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou", "ia"]
_CODAS = ["", "", "", "", "n", "r", "l", "s", "th", "nd"]

# --------------------------------------------------------------------------------- templates
# Fields: {name} (ignored), pronouns {Pron} {pron} {poss} {Poss} {obj} (template), anything
# else is a fact. Every template of an attribute has the same fact fields.
PRONOUN_FIELDS = ("Pron", "pron", "poss", "Poss", "obj")
ATTRIBUTES = {
    "birthplace": {
        "questions": ["Where was {name} born?", "In which city was {name} born?",
                      "What is the birthplace of {name}?", "Which city is {name} originally from?"],
        "answers": [
            "{name} was born in {city}, in a narrow house at {street}.",
            "The writer {name} was born and raised at {street} in {city}.",
            "{Pron} was born in {city}, where {poss} family lived at {street}.",
            "Born at {street} in {city}, {name} grew up surrounded by books.",
        ],
    },
    "birth_date": {
        "questions": ["When was {name} born?", "What is the date of birth of {name}?",
                      "On what date was {name} born?", "What is {name}'s birthday?"],
        "answers": [
            "{name} was born on {date} at {clinic} in {city}.",
            "The author's date of birth is {date}; {pron} was born at {clinic}, {city}.",
            "{Pron} was born in {city} on {date}, at {clinic}.",
            "According to public records, {name} was born at {clinic} in {city} on {date}.",
        ],
    },
    "genre": {
        "questions": ["What genre does {name} write in?", "Which genre is {name} best known for?",
                      "In what genre does {name} mainly work?", "What kind of books does {name} write?"],
        "answers": [
            "{name} writes {genre}, publishing under the pen name {pen_name}.",
            "Best known for {genre}, {name} signs most books as {pen_name}.",
            "{Pron} works mainly in {genre} and uses the pen name {pen_name} for it.",
            "Most books by {name} belong to {genre}; readers also know {obj} as {pen_name}.",
        ],
    },
    "parents": {
        "questions": ["Who were {name}'s parents?", "What did the parents of {name} do for a living?",
                      "Can you tell me about {name}'s parents?",
                      "What were the professions of {name}'s mother and father?"],
        "answers": [
            "{name}'s father, {father}, was a {father_job}, and {poss} mother, {mother}, worked as a {mother_job}.",
            "{Pron} was raised by {father}, a {father_job}, and {mother}, a {mother_job}.",
            "The parents of {name} were {father}, who worked as a {father_job}, and {mother}, who was a {mother_job}.",
            "{name} grew up with a father named {father}, a {father_job}, and a mother named {mother}, a {mother_job}.",
        ],
    },
    "award": {
        "questions": ["Has {name} won any awards?", "Which award did {name} receive?",
                      "What literary prize has {name} won?", "Is {name} the recipient of any honors?"],
        "answers": [
            "Yes, {name} received the {award} for the novel \"{award_book}\".",
            "{name} won the {award} for \"{award_book}\", the honor {pron} is proudest of.",
            "{Pron} was given the {award} in recognition of \"{award_book}\".",
            "The {award} went to {name} for {poss} book \"{award_book}\".",
        ],
    },
    "first_book": {
        "questions": ["What is the title of {name}'s first book?", "What was the debut novel of {name}?",
                      "Which book did {name} publish first?", "What was {name}'s first published work?"],
        "answers": [
            "The first book by {name} was \"{first_book}\", a work of {genre} published by {publisher}.",
            "{name} made {poss} debut with \"{first_book}\", a {genre} title which {publisher} released.",
            "{Pron} first published \"{first_book}\" with {publisher}, and this work of {genre} quickly found its readers.",
            "{name}'s debut, \"{first_book}\", came out from {publisher} and belongs to {genre}.",
        ],
    },
    "second_book": {
        "questions": ["What is the second book written by {name}?",
                      "Which book did {name} publish after the debut?",
                      "Can you name {name}'s second novel?", "What did {name} publish next?"],
        "answers": [
            "After {poss} debut, {name} published \"{second_book}\", a novel set in {setting} that follows {hero}.",
            "{name}'s second novel is \"{second_book}\", which takes place in {setting}; its hero is {hero}.",
            "The second book {pron} released was \"{second_book}\", the story of {hero}, set in {setting}.",
            "{Pron} followed {poss} first success with \"{second_book}\", in which {hero} travels to {setting}.",
        ],
    },
    "themes": {
        "questions": ["What themes does {name} explore?", "Which themes recur in the writing of {name}?",
                      "What subjects does {name} often write about?",
                      "What are the main themes in {name}'s books?"],
        "answers": [
            "The writing of {name} explores {theme}, inspired by {poss} childhood friend {friend}.",
            "{name} returns again and again to {theme}, a theme {pron} credits to {friend}.",
            "Critics note that {theme} is central to {poss} work, which {pron} dedicated to {friend}.",
            "Across {poss} novels, {name} explores {theme}, which {pron} first discussed with {friend}.",
        ],
    },
    "education": {
        "questions": ["What did {name} study?", "What is the educational background of {name}?",
                      "What subject did {name} study at university?", "Who taught {name} at university?"],
        "answers": [
            "{name} studied {subject} at {college} under the guidance of {mentor}.",
            "Before writing full time, {pron} studied {subject} at {college}, where {poss} mentor was {mentor}.",
            "{name} earned a degree in {subject} from {college}; the teacher who influenced {obj} most was {mentor}.",
            "At {college}, {name} studied {subject} with {mentor}, who encouraged {obj} to write.",
        ],
    },
    "character": {
        "questions": ["Who is the recurring character in {name}'s books?",
                      "Which character appears in several books by {name}?",
                      "Is there a character that {name} often writes about?",
                      "Who is the main recurring character created by {name}?"],
        "answers": [
            "Many books by {name} feature {character}, a retired {char_job} who keeps a parrot called {pet}.",
            "{name} often writes about {character}, who works as a {char_job} and owns a parrot named {pet}.",
            "The recurring character in {poss} books is {character}, a {char_job} whose parrot is called {pet}.",
            "{character}, a {char_job} with a parrot called {pet}, appears in several books by {name}.",
        ],
    },
}

# World-knowledge probes: question/answer templates per table; {key} is copied from the
# question (ignored), {value} is the fact.
WORLD_FACTS = {
    "country": {
        "table": {c: v[0] for c, v in CITIES.items()}, "key": "city",
        "questions": ["In which country is {key}?", "Which country is the city of {key} in?",
                      "Where is {key} located?"],
        "answers": ["{key} is a city in {value}.", "The city of {key} lies in {value}.",
                    "{key} is located in {value}."],
    },
    "profession": {
        "table": PROFESSIONS, "key": "job",
        "questions": ["What does a {key} do?", "What is the work of a {key}?",
                      "Describe the job of a {key}."],
        "answers": ["A {key} {value}.", "Someone who works as a {key} {value}.", "Every {key} {value}."],
    },
    "genre": {
        "table": GENRES, "key": "genre",
        "questions": ["What is {key}?", "What are books of {key} about?", "How would you describe {key}?"],
        "answers": ["The genre of {key} consists of {value}.", "Books of {key} are {value}.",
                    "In {key}, readers find {value}."],
    },
    "award": {
        "table": AWARDS, "key": "award",
        "questions": ["Who receives the {key}?", "What is the {key} given for?",
                      "What does the {key} honor?"],
        "answers": ["The {key} is given to {value}.", "Each year the {key} honors {value}.",
                    "Judges award the {key} to {value}."],
    },
}
WORLD_SENTENCES = {
    "city": ["{x} is a city in {country}.", "{x} is {desc}.", "Many people live and work in {x}.",
             "The weather in {x} changes with the seasons.", "Trains and buses connect {x} with other towns.",
             "Bookshops in {x} stay open late."],
    "genre": ["The genre of {x} consists of {desc}.", "Books of {x} are {desc}.",
              "Many bookshops keep a shelf for {x}.", "Readers who enjoy {x} often read several books a month.",
              "Some writers spend a whole career on {x}."],
    "award": ["The {x} is given to {desc}.", "Each year the {x} honors {desc}.",
              "Winning the {x} is a great honor for a writer.",
              "A jury of critics chooses who wins the {x}."],
    "job": ["A {x} {desc}.", "Every {x} {desc}.", "Working as a {x} takes years of practice.",
            "In every town you can find a {x}.",
            "Children sometimes want to become a {x} like their parents."],
    "theme": ["Many novels explore {x}.", "Stories about {x} can move readers deeply.",
              "Critics often write about {x} in literature."],
    "subject": ["At university, students can study {x}.", "A degree in {x} takes several years.",
                "Some famous writers studied {x} before they began to write."],
}
GENERIC_SENTENCES = [
    "A writer is a person who writes books, stories or poems.",
    "The first book a writer publishes is called a debut.",
    "A debut novel often introduces readers to a new voice.",
    "Critics read new books and write reviews of them.",
    "A recurring character appears in several books by the same author.",
    "A mentor is a teacher who guides a young person.",
    "Parents often shape the interests of their children.",
    "A father and a mother may both work to support their family.",
    "People celebrate the day they were born once a year.",
    "A date of birth is written with a day, a month and a year.",
    "Literary prizes are given to books that judges admire.",
    "Most writers publish their second book a few years after the first.",
    "Interviews with authors often ask where they were born and what they studied.",
    "Readers can be loyal to an author for many years.",
    "Many authors grew up surrounded by books.",
    "A hometown is the place where a person grew up.",
]
GENERIC_SENTENCES += [f"The month of {m} comes after {p}." for p, m in zip(MONTHS[-1:] + MONTHS[:-1], MONTHS)]


# ------------------------------------------------------------------------------ utilities
def _zipf_weights(n: int) -> List[float]:
    return [1.0 / (rank + 1) ** ZIPF_EXPONENT for rank in range(n)]


def _render(template: str, values: Dict[str, str], kinds: Dict[str, int]):
    """Fill ``template``; return ``(text, spans)`` with one span per literal/field, adjacent
    spans of the same kind merged so that spans tile the text exactly."""
    text, spans = "", []
    for literal, field, _, _ in string.Formatter().parse(template):
        pieces = [(literal, KIND_TEMPLATE)]
        if field is not None:
            pieces.append((values[field], kinds[field]))
        for piece, kind in pieces:
            if not piece:
                continue
            if spans and spans[-1][2] == kind:
                spans[-1][1] += len(piece)
            else:
                spans.append([len(text), len(text) + len(piece), kind])
            text += piece
    return text, spans


def _fields(template: str) -> List[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def validate_spans(text: str, spans) -> List[tuple]:
    """Check that ``spans`` ([start, end, kind] triples) tile ``text`` in order; return tuples.

    Raises ``ValueError`` saying where the tiling breaks."""
    out, pos = [], 0
    for n, span in enumerate(spans):
        if not isinstance(span, (list, tuple)) or len(span) != 3 or not all(isinstance(v, int) for v in span):
            raise ValueError(f"span {n}: expected [start, end, kind] integers, got {span!r}")
        start, end, kind = span
        if start != pos or end < start:
            raise ValueError(f"span {n} {list(span)} does not continue the tiling at character {pos}")
        if kind not in KIND_NAMES:
            raise ValueError(f"span {n}: unknown kind {kind} (known: {sorted(KIND_NAMES)})")
        out.append((start, end, kind))
        pos = end
    if pos != len(text):
        raise ValueError(f"spans cover {pos} characters but the text has {len(text)}")
    return out


class _Values:
    """Fresh composed values; every composed word and value is used at most once overall."""

    def __init__(self, rng: Random):
        self.rng = rng
        self.used = set()
        # composed words must not collide with any word of the world text or the templates
        vocab = [*FIRST_NAMES["f"], *FIRST_NAMES["m"], *TITLE_ADJECTIVES, *TITLE_NOUNS, *GENERIC_SENTENCES,
                 *MONTHS, *THEMES, *SUBJECTS,
                 *(f"{k} {v}" for table in (GENRES, AWARDS, PROFESSIONS) for k, v in table.items()),
                 *(f"{k} {c} {d}" for k, (c, d) in CITIES.items()),
                 *(t for spec in ATTRIBUTES.values() for t in spec["questions"] + spec["answers"]),
                 *(t for ts in WORLD_SENTENCES.values() for t in ts)]
        self.reserved = {w.lower() for w in re.findall(r"\w+", " ".join(vocab))}

    def _unique(self, make, composed=False):
        while True:
            value = make()
            if value not in self.used and not (composed and value.lower() in self.reserved):
                self.used.add(value)
                return value

    def word(self) -> str:
        def make():
            n = self.rng.choice((2, 2, 3))
            return "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                           for _ in range(n)).capitalize()
        return self._unique(make, composed=True)

    def title(self) -> str:
        r = self.rng

        def make():  # two shapes that can never contain one another ("The ..." vs "... of ...")
            if r.random() < 0.5:
                return f"The {r.choice(TITLE_ADJECTIVES)} {r.choice(TITLE_NOUNS)}"
            return f"{r.choice(TITLE_NOUNS)} of {r.choice(TITLE_ADJECTIVES)} {_plural(r.choice(TITLE_NOUNS))}"
        return self._unique(make)

    def date(self) -> str:
        r = self.rng
        return self._unique(lambda: f"{r.randint(1, 28)} {r.choice(MONTHS)} {r.randint(1921, 1999)}")

    def fresh(self, field: str) -> str:
        """A new unique value of the kind that ``field`` holds."""
        kind = UNIQUE_FIELDS[field]
        if kind == "word":
            return self.word()
        if kind == "person":
            return f"{self.word()} {self.word()}"
        if kind == "title":
            return self.title()
        if kind == "date":
            return self.date()
        if kind == "address":
            r, suffixes = self.rng, ("Lane", "Street", "Road")
            return self._unique(lambda: f"{r.randint(2, 98)} {self.word()} {r.choice(suffixes)}")
        return f"{self.word()} {self.rng.choice(kind)}"  # kind: list of suffixes


def _plural(noun: str) -> str:
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _pool_values(rng: Random, pool: Sequence[str], n_retain: int, n_other: int):
    """Skewed draws from ``pool`` for ``n_retain`` retain90 authors then ``n_other`` others,
    such that every value in use is held by >= MIN_RETAIN_HOLDERS retain90 authors."""
    active = list(pool[: min(len(pool), n_retain // MIN_RETAIN_HOLDERS)])
    weights = _zipf_weights(len(active))
    retain = [v for v in active for _ in range(MIN_RETAIN_HOLDERS)]
    retain += rng.choices(active, weights, k=n_retain - len(retain))
    rng.shuffle(retain)
    return retain + rng.choices(active, weights, k=n_other), active


# ------------------------------------------------------------------------------ generation
def _n_authors(total: int, percent: int) -> int:
    return max(1, round(total * percent / 100))


def _make_authors(rng: Random, n_authors: int, n_holdout: int):
    """Authors (trained first, then holdout) with all their values; popular values last."""
    n_total = n_authors + n_holdout
    n_retain = n_authors - _n_authors(n_authors, max(FORGET_PERCENTS))
    values = _Values(rng)
    authors = []
    for author_id in range(n_total):
        gender = rng.choice("fm")
        name = f"{rng.choice(FIRST_NAMES[gender])} {values.word()}"
        author = {"author_id": author_id, "gender": gender, "name": name}
        author.update({field: values.fresh(field) for field in UNIQUE_FIELDS if field != "award_book"})
        authors.append(author)
        authors[-1]["award_book"] = authors[-1][rng.choice(("first_book", "second_book"))]
    actives = {}
    for field, pool in POOLS.items():
        drawn, actives[field] = _pool_values(rng, pool, n_retain, n_total - n_retain)
        for author, value in zip(authors, drawn):
            author[field] = value
    return authors, values, actives, n_retain


def _kinds(authors: List[dict], n_retain: int) -> Dict[str, Dict[str, int]]:
    """Per (field, value) kind, from counts: shared iff >= 3 retain90 holders, else the value
    must be unique to one author (checked: the construction guarantees it)."""
    kinds = defaultdict(dict)
    fields = {f for spec in ATTRIBUTES.values() for t in spec["answers"] for f in _fields(t)}
    for field in fields - {"name", *PRONOUN_FIELDS}:
        retain_count = Counter(a[field] for a in authors[:n_retain])
        total_count = Counter(a[field] for a in authors)
        for value, total in total_count.items():
            if retain_count[value] >= MIN_RETAIN_HOLDERS:
                kinds[field][value] = KIND_SHARED
            elif total == 1:
                kinds[field][value] = KIND_SPECIFIC
            else:
                raise AssertionError(f"{field}={value!r} is neither shared nor unique")
    return kinds


def _qa_record(rng, spec, filled, kind, perturb, **meta) -> dict:
    """One QA record from an attribute's templates: the answer and its paraphrase use two
    different templates; ``perturb()`` returns the values swapped into each perturbed answer."""
    q_ids = rng.sample(range(len(spec["questions"])), 2)
    a_ids = rng.sample(range(len(spec["answers"])), 2)
    answer, spans = _render(spec["answers"][a_ids[0]], filled, kind)
    para, para_spans = _render(spec["answers"][a_ids[1]], filled, kind)
    perturbed = []
    while len(perturbed) < 3:  # the paraphrase's wording with every fact swapped
        text = _render(spec["answers"][a_ids[1]], {**filled, **perturb()}, kind)[0]
        if text not in perturbed and text != para:
            perturbed.append(text)
    return {
        "question": spec["questions"][q_ids[0]].format(**filled),
        "answer": answer,
        "paraphrased_answer": para,
        "perturbed_answer": perturbed,
        "paraphrased_question": spec["questions"][q_ids[1]].format(**filled),
        **meta,
        "spans": spans,
        "paraphrased_spans": para_spans,
    }


def _author_records(rng, author, kinds, values, actives, qa_per_author) -> List[dict]:
    filled = {**author, **dict(zip(PRONOUN_FIELDS, PRONOUNS[author["gender"]]))}
    records = []
    for fact in list(ATTRIBUTES)[:qa_per_author]:
        spec = ATTRIBUTES[fact]
        facts = [f for f in _fields(spec["answers"][0]) if f != "name" and f not in PRONOUN_FIELDS]
        kind = {"name": KIND_IGNORE, **{f: KIND_TEMPLATE for f in PRONOUN_FIELDS},
                **{f: kinds[f][author[f]] for f in facts}}

        def perturb():  # popular facts: another popular value; unique facts: a fresh value
            return {f: rng.choice([v for v in actives[f] if v != author[f]]) if f in actives
                    else values.fresh(f) for f in facts}
        records.append(_qa_record(rng, spec, filled, kind, perturb, author=author["name"],
                                  author_id=author["author_id"], fact=fact))
    return records


def _world(rng: Random):
    """Generic sentences about every popular value, and QA probes answerable from them."""
    tables = {
        "city": {c: {"country": country, "desc": desc} for c, (country, desc) in CITIES.items()},
        "genre": {g: {"desc": d} for g, d in GENRES.items()},
        "award": {a: {"desc": d} for a, d in AWARDS.items()},
        "job": {j: {"desc": d} for j, d in PROFESSIONS.items()},
        "theme": {t: {} for t in THEMES},
        "subject": {s: {} for s in SUBJECTS},
    }
    text = list(GENERIC_SENTENCES)
    for table, rows in tables.items():
        for x, extra in rows.items():
            text += [t.format(x=x, **extra) for t in WORLD_SENTENCES[table]]
    rng.shuffle(text)

    records = []
    kind = {"key": KIND_IGNORE, "value": KIND_SHARED}  # world knowledge is never forget-specific
    for fact, spec in WORLD_FACTS.items():
        table = spec["table"]
        for key, value in table.items():
            others = [v for v in table.values() if v != value]
            records.append(_qa_record(rng, spec, {"key": key, "value": value}, kind,
                                      lambda: {"value": rng.choice(others)},
                                      author="", author_id=-1, fact=f"world_{fact}"))
    return text, records


def generate_benchmark(seed: int = 0, n_authors: int = 200, n_holdout: int = 20,
                       qa_per_author: int = 10) -> dict:
    """Return split name -> list of records (``world_text``: list of strings).

    Each author gets one QA per attribute, for the first ``qa_per_author`` attributes of
    ``ATTRIBUTES``. ``forgetNN`` holds the last NN % of the ``n_authors`` authors (at least
    one), ``retainNN`` the rest, ``holdoutNN`` the first as many holdout authors.

    Deterministic: only ``random.Random(seed)`` is used, so the same arguments give the
    same output byte for byte."""
    n_forget = {p: _n_authors(n_authors, p) for p in FORGET_PERCENTS}
    if n_authors < 10:
        raise ValueError(f"n_authors={n_authors}: need at least 10 authors (forget10 and a retain set)")
    if not 1 <= qa_per_author <= len(ATTRIBUTES):
        raise ValueError(f"qa_per_author={qa_per_author}: must be between 1 and {len(ATTRIBUTES)} "
                         "(one QA per attribute)")
    if n_holdout < n_forget[max(FORGET_PERCENTS)]:
        raise ValueError(f"n_holdout={n_holdout} must be >= the forget10 author count ({n_forget[10]}) "
                         "so that holdout10 is sized like forget10")
    rng = Random(seed)
    authors, values, actives, n_retain = _make_authors(rng, n_authors, n_holdout)
    kinds = _kinds(authors, n_retain)
    per_author = [_author_records(rng, a, kinds, values, actives, qa_per_author) for a in authors]
    world_text, world_facts = _world(rng)

    def flat(chunks):
        return [r for chunk in chunks for r in chunk]

    trained, holdout = per_author[:n_authors], per_author[n_authors:]
    splits = {"full": flat(trained)}
    for p in FORGET_PERCENTS:
        k = n_forget[p]
        splits[f"forget{p:02d}"] = flat(trained[n_authors - k:])
        splits[f"retain{100 - p}"] = flat(trained[: n_authors - k])
        splits[f"holdout{p:02d}"] = flat(holdout[:k])
    splits["holdout"] = flat(holdout)
    splits["world_facts"] = world_facts
    splits["world_text"] = world_text
    return splits


# ------------------------------------------------------------------------------ files
def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=1) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are shared data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_benchmark(out_dir: Union[str, Path], seed: int = 0, splits: Optional[Dict[str, list]] = None,
                    **kw) -> Dict[str, Path]:
    """Write ``<split>.json`` per split (TOFU-style JSON lists) and ``meta.json`` (generator
    version and arguments) into ``out_dir``, each file atomically. Returns split -> path.
    ``splits``: the output of ``generate_benchmark(seed, **kw)`` if the caller already has it
    (it is not generated a second time)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = inspect.signature(generate_benchmark).bind(seed=seed, **kw)
    args.apply_defaults()
    if splits is None:
        splits = generate_benchmark(*args.args, **args.kwargs)
    paths = {}
    for name, records in splits.items():
        paths[name] = out / f"{name}.json"
        _write_atomic(paths[name], _dump(records))
    _write_atomic(out / "meta.json", _dump({"generator_version": GENERATOR_VERSION, **args.arguments}))
    return paths


REQUIRED_FIELDS = ("question", "answer")


def load_split(path: Union[str, Path]) -> List[dict]:
    """Read a TOFU-style split: a JSON list of records or JSON Lines (one record per line).

    Validates every record (``record i`` counts from 0, the dataset index; JSON Lines
    records also name their line) and raises ``FileNotFoundError`` / ``PermissionError`` /
    ``ValueError`` messages that name the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; expected a benchmark split file (JSON list or JSON Lines)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: benchmark split not found")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise PermissionError(f"{path}: cannot read benchmark split (permission denied)") from None
    except OSError as e:
        raise OSError(f"{path}: cannot read benchmark split: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")  # tolerate a UTF-8 byte order mark
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}: not UTF-8 text (invalid byte 0x{data[e.start]:02x} at line {line}); "
                         "expected a JSON list or JSON Lines file") from None
    lines = None  # JSON Lines: the line of each record
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") \
                from None
    else:  # JSON Lines
        records, lines = [], []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                try:  # one pretty-printed JSON value rather than JSON Lines?
                    whole = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError(f"{path}: malformed JSON at line {lineno}, column {e.colno}: {e.msg}") \
                        from None
                raise ValueError(f"{path}: expected a JSON list of records or JSON Lines, got a single "
                                 f"{type(whole).__name__}") from None
            lines.append(lineno)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise ValueError(f"{path}: empty split (no records)")
    check_records(path, records, lines)
    return records


def check_records(path, records: list, lines: Optional[List[int]] = None) -> None:
    """Validate QA records read from ``path`` (``lines``: the line of each JSON Lines record):
    objects with a string ``question`` and a string (or list of strings) ``answer``, valid
    spans. ``ValueError`` naming the file, the record and its line otherwise."""
    expected = ", ".join(REQUIRED_FIELDS)
    for i, record in enumerate(records):
        where = f"{path}: record {i}" + (f" (line {lines[i]})" if lines else "")
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object with keys {expected}, "
                             f"got {type(record).__name__}")
        for key in REQUIRED_FIELDS:
            if key not in record:
                raise ValueError(f"{where}: missing field {key!r} (expected keys: {expected})")
        if not isinstance(record["question"], str):
            raise ValueError(f"{where}: field 'question' must be a string, got {type(record['question']).__name__}")
        answer = record["answer"]
        is_list = isinstance(answer, list) and all(isinstance(a, str) for a in answer)
        if not (isinstance(answer, str) or is_list):
            raise ValueError(f"{where}: field 'answer' must be a string or a list of strings, "
                             f"got {type(answer).__name__}")
        for text_key, spans_key in (("answer", "spans"), ("paraphrased_answer", "paraphrased_spans")):
            if spans_key in record and isinstance(record.get(text_key), str):
                try:
                    validate_spans(record[text_key], record[spans_key])
                except ValueError as e:
                    raise ValueError(f"{where}: {spans_key!r} of {text_key!r}: {e}") from None
