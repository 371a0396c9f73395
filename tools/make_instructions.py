#!/usr/bin/env python3
"""Build the bundled Korean legal instruction set (Stanford-Alpaca JSONL) from the Constitution.

Reads  data/korean-law/kolaw/constitution.txt   (대한민국헌법, see data/korean-law/PROVENANCE.md)
Writes data/instructions/train.jsonl            training records
       data/instructions/heldout.jsonl          held-out PHRASINGS of article questions
       data/instructions/stats.json             counts, lengths, templates per split

Every record is one JSON object per line with exactly the string keys `instruction`, `input`
(possibly "") and `output`. Every answer is taken from the text itself (article text, paragraph
text, chapter/section headings and the article ranges under them); nothing is invented.

The held-out split uses article-text phrasings that never occur in train.jsonl (checked), about
the same articles, so it measures generalisation to new wordings of known questions.

Deterministic: fixed seeds, sorted iteration; two runs give byte-identical files.
Standard library only (Python 3.11), no network.

    python3 tools/make_instructions.py            # from the repository root
    python3 tools/make_instructions.py --src DIR --out DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SRC = REPO / "data" / "korean-law" / "kolaw" / "constitution.txt"
DEFAULT_OUT = REPO / "data" / "instructions"

HELDOUT_MAX = 200
HELDOUT_SEED = 1234  # held-out sampling
CHOICE_SEED = 1235  # which phrasings each article gets in train
SHUFFLE_SEED = 1236  # order of train.jsonl
ARTICLE_PHRASINGS_PER_ARTICLE = 6  # of the 8 training article-text phrasings, per article
PARAGRAPH_PHRASINGS_PER_PARAGRAPH = 2  # of the 3 paragraph-text phrasings, per paragraph

CIRCLED = "①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮⑯⑰⑱⑲⑳"

# ---------------------------------------------------------------------------------------------
# Templates. Each has a stable id; `{n}` = article number, `{m}` = paragraph number, etc.
# ---------------------------------------------------------------------------------------------

# Article text, no input. TRAIN ONLY.
ARTICLE_TRAIN = [
    ("art.tell", "헌법 제{n}조를 알려주세요."),
    ("art.how", "헌법 제{n}조는 어떻게 규정하고 있나요?"),
    ("art.verbatim", "대한민국헌법 제{n}조의 조문을 그대로 적어 주세요."),
    ("art.what_decides", "헌법 제{n}조에서는 무엇을 정하고 있나요?"),
    ("art.say_rule", "대한민국헌법 제{n}조의 규정을 말해 주세요."),
    ("art.quote", "우리나라 헌법 제{n}조의 조문을 인용해 주세요."),
    ("art.show_all", "헌법 제{n}조 조문 전체를 보여 주세요."),
    ("art.what_is", "헌법 제{n}조가 무엇인지 알려 주세요."),
]
# Article text, no input. HELD-OUT ONLY (never in train.jsonl).
ARTICLE_HELDOUT = [
    ("art.heldout.content", "대한민국헌법 제{n}조의 내용은 무엇인가요?"),
    ("art.heldout.written", "헌법 제{n}조에는 무엇이 적혀 있나요?"),
]
DEMO_TEMPLATE = "art.heldout.content"  # README demo: 제1조 with this phrasing must be held out

ADDENDUM_TEXT = [
    ("add.tell", "헌법 부칙 제{n}조를 알려주세요."),
    ("add.how", "대한민국헌법 부칙 제{n}조는 어떻게 규정하고 있나요?"),
    ("add.verbatim", "헌법 부칙 제{n}조의 조문을 그대로 적어 주세요."),
]
PREAMBLE_TEXT = [
    ("pre.tell", "대한민국헌법 전문(前文)을 알려주세요."),
    ("pre.how", "헌법 전문(前文)은 어떻게 되어 있나요?"),
    ("pre.verbatim", "대한민국헌법의 전문(前文)을 그대로 적어 주세요."),
]
PARAGRAPH_TEXT = [
    ("par.tell", "헌법 제{n}조 제{m}항을 알려주세요."),
    ("par.how", "대한민국헌법 제{n}조 제{m}항은 어떻게 규정하고 있나요?"),
    ("par.verbatim", "헌법 제{n}조 제{m}항의 조문을 적어 주세요."),
]
ARTICLE_CHAPTER = [
    ("artchap.which", "헌법 제{n}조는 어느 장에 속하나요?"),
    ("artchap.where", "대한민국헌법 제{n}조는 헌법의 어느 부분에 있나요?"),
]
CHAPTER_TITLE = [
    ("chap.title", "헌법 제{c}장의 제목은 무엇인가요?"),
    ("chap.about", "대한민국헌법 제{c}장은 무엇에 관한 장인가요?"),
]
CHAPTER_ARTICLES = [
    ("chap.articles", "헌법 제{c}장에는 어떤 조문들이 있나요?"),
    ("chap.range", "대한민국헌법 제{c}장은 몇 조부터 몇 조까지인가요?"),
]
# {path} = "제4장 제1절", "제4장 제2절 제3관"
SUBDIV_TITLE = [("sub.title", "헌법 {path}의 제목은 무엇인가요?")]
SUBDIV_ARTICLES = [("sub.articles", "헌법 {path}에는 어떤 조문들이 있나요?")]
# Which articles are about X, X = a chapter/section/subsection heading (the text has no
# article titles, so headings are the only subjects that can be named without inventing).
SUBJECT = [
    ("subj.where", "헌법에서 '{x}'에 관한 규정은 어디에 있나요?"),
    ("subj.which", "'{x}'{eul} 다루는 헌법 조문은 몇 조인가요?"),
]
OVERVIEW = [
    ("ov.chapters", "대한민국헌법은 몇 개의 장으로 이루어져 있나요?"),
    ("ov.articles", "대한민국헌법 본문은 몇 개의 조문으로 되어 있나요?"),
    ("ov.chapter_list", "대한민국헌법의 장 목록을 알려 주세요."),
]

# With input.
IDENTIFY_ARTICLE = [
    ("in.identify.a", "다음 조문이 헌법 몇 조인지 답하시오."),
    ("in.identify.b", "아래 조문은 대한민국헌법의 몇 조인가요?"),
]
BY_REFERENCE = [
    ("in.byref.a", "다음 헌법 조항의 조문을 알려 주세요."),
    ("in.byref.b", "다음 헌법 조문을 그대로 적으시오."),
]
IDENTIFY_CHAPTER = [("in.chapter", "다음 조문은 대한민국헌법의 어느 장에 속하나요?")]
PARAGRAPH_COUNT = [("in.parcount", "다음 헌법 조문은 몇 개의 항으로 이루어져 있나요?")]
IDENTIFY_PARAGRAPH = [("in.identify_par", "다음 조항은 헌법 몇 조 몇 항인가요?")]
PARAGRAPH_BY_REFERENCE = [("in.byref_par", "다음 헌법 조항을 그대로 적으시오.")]
IDENTIFY_PREAMBLE = [("in.preamble", "다음 글은 대한민국헌법의 어느 부분인가요?")]

ALL_TEMPLATES = {
    tid: text
    for group in (
        ARTICLE_TRAIN, ARTICLE_HELDOUT, ADDENDUM_TEXT, PREAMBLE_TEXT, PARAGRAPH_TEXT,
        ARTICLE_CHAPTER, CHAPTER_TITLE, CHAPTER_ARTICLES, SUBDIV_TITLE, SUBDIV_ARTICLES,
        SUBJECT, OVERVIEW, IDENTIFY_ARTICLE, BY_REFERENCE, IDENTIFY_CHAPTER, PARAGRAPH_COUNT,
        IDENTIFY_PARAGRAPH, PARAGRAPH_BY_REFERENCE, IDENTIFY_PREAMBLE,
    )
    for tid, text in group
}
HELDOUT_IDS = {tid for tid, _ in ARTICLE_HELDOUT}


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


@dataclass
class Article:
    number: int
    addendum: bool
    lines: list[str]  # normalised lines (header `제N조` removed)
    chapter: int | None = None
    section: int | None = None  # 절
    subsection: int | None = None  # 관

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def paragraphs(self) -> list[str]:
        """Paragraph texts (①②… markers removed); [] when the article has no ①."""
        if not self.lines[0].startswith("①"):
            return []
        paras: list[list[str]] = []
        for line in self.lines:
            if line[0] in CIRCLED:
                paras.append([line[1:].strip()])
            else:  # items `1. …` or a quoted oath belong to the current paragraph
                paras[-1].append(line)
        return ["\n".join(p) for p in paras]


@dataclass
class Heading:
    kind: str  # 장 / 절 / 관
    number: int
    title: str
    chapter: int
    section: int | None = None
    articles: list[int] = field(default_factory=list)

    @property
    def path(self) -> str:
        if self.kind == "장":
            return f"제{self.chapter}장"
        if self.kind == "절":
            return f"제{self.chapter}장 제{self.number}절"
        return f"제{self.chapter}장 제{self.section}절 제{self.number}관"


@dataclass
class Constitution:
    title: str
    preamble: str
    articles: list[Article]
    addenda: list[Article]
    addenda_header: str
    chapters: list[Heading]
    subdivisions: list[Heading]  # 절 and 관, in text order


RE_CHAPTER = re.compile(r"^제(\d+)장\s+(\S.*)$")
RE_SECTION = re.compile(r"^제(\d+)절\s+(\S.*)$")
RE_SUBSECTION = re.compile(r"^제(\d+)관\s+(\S.*)$")
RE_ARTICLE = re.compile(r"^제(\d+)조(?:\(([^)]*)\))?\s*(\S.*)$")
RE_ADDENDA = re.compile(r"부칙\s*(<[^>]*>)")


def normalise_line(line: str) -> str:
    line = re.sub(r"\s+", " ", line.strip())
    if line and line[0] in CIRCLED:  # one space after ①, ②, … (the source mixes both)
        line = line[0] + " " + line[1:].lstrip()
    return line


def parse(path: Path) -> Constitution:
    raw = path.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\r", "\n")
    lines = [l.strip() for l in raw.split("\n")]
    title = lines[0]
    assert title == "대한민국헌법", title

    preamble_lines: list[str] = []
    articles: list[Article] = []
    addenda: list[Article] = []
    chapters: list[Heading] = []
    subdivisions: list[Heading] = []
    addenda_header = ""
    chapter = section = subsection = None
    current: Article | None = None
    in_addenda = False

    for line in lines[1:]:
        if not line:
            continue
        if m := RE_ADDENDA.search(line):
            in_addenda, current = True, None
            addenda_header = f"부칙 {m.group(1)}"  # drop the web-page residue `펼침`/`부칙보기`
            chapter = section = subsection = None
            continue
        if not in_addenda and (m := RE_CHAPTER.match(line)):
            chapter, section, subsection, current = int(m.group(1)), None, None, None
            chapters.append(Heading("장", chapter, m.group(2).strip(), chapter))
            continue
        if not in_addenda and (m := RE_SECTION.match(line)):
            section, subsection, current = int(m.group(1)), None, None
            subdivisions.append(Heading("절", section, m.group(2).strip(), chapter))
            continue
        if not in_addenda and (m := RE_SUBSECTION.match(line)):
            subsection, current = int(m.group(1)), None
            subdivisions.append(Heading("관", subsection, m.group(2).strip(), chapter, section))
            continue
        if m := RE_ARTICLE.match(line):
            assert m.group(2) is None, f"article titles are not expected: {line}"
            current = Article(int(m.group(1)), in_addenda, [normalise_line(m.group(3))],
                              chapter, section, subsection)
            (addenda if in_addenda else articles).append(current)
            continue
        if chapter is None and not in_addenda:
            preamble_lines.append(line)
            continue
        assert current is not None, f"text outside an article: {line}"
        current.lines.append(normalise_line(line))

    # Structural checks: what PROVENANCE.md promises.
    assert [a.number for a in articles] == list(range(1, 131)), "expected 제1조–제130조"
    assert [a.number for a in addenda] == list(range(1, 7)), "expected 부칙 제1조–제6조"
    assert [c.number for c in chapters] == list(range(1, 11)), "expected 제1장–제10장"
    assert len(preamble_lines) == 1
    for a in articles + addenda:
        marks = [l[0] for l in a.lines if l[0] in CIRCLED]
        assert marks == list(CIRCLED[: len(marks)]), (a.number, marks)
        assert not marks or a.lines[0][0] == "①", a.number
    for h in chapters:
        h.articles = [a.number for a in articles if a.chapter == h.number]
    for h in subdivisions:
        if h.kind == "절":
            h.articles = [a.number for a in articles
                          if a.chapter == h.chapter and a.section == h.number]
        else:
            h.articles = [a.number for a in articles if a.chapter == h.chapter
                          and a.section == h.section and a.subsection == h.number]
    for h in chapters + subdivisions:
        assert h.articles == list(range(h.articles[0], h.articles[-1] + 1)), h
    return Constitution(title, preamble_lines[0], articles, addenda, addenda_header,
                        chapters, subdivisions)


# ---------------------------------------------------------------------------------------------
# Korean helpers
# ---------------------------------------------------------------------------------------------


def has_batchim(word: str) -> bool:
    ch = word[-1]
    if "가" <= ch <= "힣":
        return (ord(ch) - 0xAC00) % 28 != 0
    return False


def eul(word: str) -> str:
    return "을" if has_batchim(word) else "를"


def art_range(nums: list[int]) -> str:
    if len(nums) == 1:
        return f"제{nums[0]}조"
    return f"제{nums[0]}조부터 제{nums[-1]}조까지"


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    kind: str
    template: str  # template id
    instruction: str
    input: str
    output: str

    def json(self) -> str:
        return json.dumps({"instruction": self.instruction, "input": self.input,
                           "output": self.output}, ensure_ascii=False)


def build(con: Constitution) -> tuple[list[Rec], list[Rec]]:
    choice = random.Random(CHOICE_SEED)
    train: list[Rec] = []
    held_pool: list[Rec] = []
    chapter_of = {h.number: h for h in con.chapters}
    subdiv_of = {(h.chapter, h.section if h.kind == "관" else None, h.kind, h.number): h
                 for h in con.subdivisions}

    def location(a: Article) -> str:
        parts = [f"제{a.chapter}장 {chapter_of[a.chapter].title}"]
        if a.section is not None:
            parts.append(f"제{a.section}절 {subdiv_of[(a.chapter, None, '절', a.section)].title}")
        if a.subsection is not None:
            h = subdiv_of[(a.chapter, a.section, "관", a.subsection)]
            parts.append(f"제{a.subsection}관 {h.title}")
        return " ".join(parts)

    def add(kind: str, tid: str, fields: dict, inp: str, out: str, to: list[Rec] = train):
        to.append(Rec(kind, tid, ALL_TEMPLATES[tid].format(**fields), inp, out))

    # Paragraph texts that occur once only (a paragraph asked by text must identify one place).
    para_count: dict[str, int] = {}
    for a in con.articles:
        for p in a.paragraphs or [a.text]:
            para_count[p] = para_count.get(p, 0) + 1
    article_texts = [a.text for a in con.articles + con.addenda]
    assert len(set(article_texts)) == len(article_texts), "duplicate article texts"

    # -- articles of the main text --------------------------------------------------------------
    for a in con.articles:
        n = a.number
        for tid, _ in sorted(choice.sample(ARTICLE_TRAIN, ARTICLE_PHRASINGS_PER_ARTICLE)):
            add("article_text", tid, {"n": n}, "", a.text)
        for tid, _ in ARTICLE_HELDOUT:
            add("article_text_heldout", tid, {"n": n}, "", a.text, held_pool)
        tid = choice.choice(IDENTIFY_ARTICLE)[0]
        add("identify_article", tid, {}, a.text, f"대한민국헌법 제{n}조입니다.")
        tid = choice.choice(BY_REFERENCE)[0]
        add("article_by_reference", tid, {}, f"대한민국헌법 제{n}조", a.text)
        add("identify_chapter", "in.chapter", {}, a.text,
            f"{location(a)}에 속하는 조문입니다(대한민국헌법 제{n}조).")
        tid = choice.choice(ARTICLE_CHAPTER)[0]
        add("article_chapter", tid, {"n": n}, "",
            f"대한민국헌법 제{n}조는 {location(a)}에 속합니다.")
        paras = a.paragraphs
        if paras:
            out = (f"대한민국헌법 제{n}조는 {len(paras)}개의 항"
                   f"({CIRCLED[0]}부터 {CIRCLED[len(paras) - 1]}까지)으로 이루어져 있습니다.")
        else:
            out = f"대한민국헌법 제{n}조는 항으로 나뉘어 있지 않은 하나의 조문입니다."
        add("paragraph_count", "in.parcount", {}, f"대한민국헌법 제{n}조", out)
        for m, p in enumerate(paras, start=1):
            for tid, _ in sorted(choice.sample(PARAGRAPH_TEXT, PARAGRAPH_PHRASINGS_PER_PARAGRAPH)):
                add("paragraph_text", tid, {"n": n, "m": m}, "", p)
            add("paragraph_by_reference", "in.byref_par", {}, f"대한민국헌법 제{n}조 제{m}항", p)
            if para_count[p] == 1:
                add("identify_paragraph", "in.identify_par", {}, p,
                    f"대한민국헌법 제{n}조 제{m}항입니다.")

    # -- addenda (부칙) -------------------------------------------------------------------------
    for a in con.addenda:
        n = a.number
        for tid, _ in ADDENDUM_TEXT:
            add("addendum_text", tid, {"n": n}, "", a.text)
        tid = choice.choice(IDENTIFY_ARTICLE)[0]
        add("identify_article", tid, {}, a.text, f"대한민국헌법 부칙 제{n}조입니다.")
        tid = choice.choice(BY_REFERENCE)[0]
        add("article_by_reference", tid, {}, f"대한민국헌법 부칙 제{n}조", a.text)

    # -- preamble (전문) ------------------------------------------------------------------------
    for tid, _ in PREAMBLE_TEXT:
        add("preamble_text", tid, {}, "", con.preamble)
    add("identify_preamble", "in.preamble", {}, con.preamble, "대한민국헌법의 전문(前文)입니다.")

    # -- chapters, sections, subsections ------------------------------------------------------
    for h in con.chapters:
        c = h.number
        for tid, _ in CHAPTER_TITLE:
            add("chapter_title", tid, {"c": c}, "", f"대한민국헌법 제{c}장의 제목은 '{h.title}'입니다.")
        for tid, _ in CHAPTER_ARTICLES:
            add("chapter_articles", tid, {"c": c}, "",
                f"대한민국헌법 제{c}장 {h.title}에는 {art_range(h.articles)} "
                f"{len(h.articles)}개 조문이 있습니다.")
    for h in con.subdivisions:
        add("subdivision_title", "sub.title", {"path": h.path}, "",
            f"대한민국헌법 {h.path}의 제목은 '{h.title}'입니다.")
        add("subdivision_articles", "sub.articles", {"path": h.path}, "",
            f"대한민국헌법 {h.path} {h.title}에는 {art_range(h.articles)} "
            f"{len(h.articles)}개 조문이 있습니다.")
    titles = [h.title for h in con.chapters + con.subdivisions]
    assert len(set(titles)) == len(titles), "heading titles must be unique to name a subject"
    for h in con.chapters + con.subdivisions:
        where = f"제{h.chapter}장 {chapter_of[h.chapter].title}"
        if h.kind != "장":
            sec = h.number if h.kind == "절" else h.section
            where += f" 제{sec}절 {subdiv_of[(h.chapter, None, '절', sec)].title}"
        if h.kind == "관":
            where += f" 제{h.number}관 {h.title}"
        for tid, _ in SUBJECT:
            add("subject_to_articles", tid, {"x": h.title, "eul": eul(h.title)}, "",
                f"'{h.title}'에 관한 규정은 대한민국헌법 {where}의 {art_range(h.articles)}입니다.")

    # -- overview -------------------------------------------------------------------------------
    first, last = con.chapters[0], con.chapters[-1]
    add("overview", "ov.chapters", {}, "",
        f"대한민국헌법 본문은 제{first.number}장 {first.title}부터 제{last.number}장 {last.title}까지 "
        f"{len(con.chapters)}개의 장으로 이루어져 있습니다.")
    add("overview", "ov.articles", {}, "",
        f"대한민국헌법 본문은 제1조부터 제{len(con.articles)}조까지 {len(con.articles)}개 조문으로 "
        f"되어 있고, 이와 별도로 {con.addenda_header}에 제1조부터 제{len(con.addenda)}조까지가 있습니다.")
    add("overview", "ov.chapter_list", {}, "",
        "\n".join(f"제{h.number}장 {h.title}" for h in con.chapters))

    return train, held_pool


def select_heldout(pool: list[Rec]) -> list[Rec]:
    """≤ HELDOUT_MAX records: every article once (제1조 with the demo phrasing), then a fixed-seed
    sample of the remaining phrasing/article pairs."""
    rng = random.Random(HELDOUT_SEED)
    by_article: dict[int, list[Rec]] = {}
    for r in pool:
        n = int(re.search(r"제(\d+)조", r.instruction).group(1))
        by_article.setdefault(n, []).append(r)
    chosen: list[tuple[int, Rec]] = []
    rest: list[tuple[int, Rec]] = []
    for n in sorted(by_article):
        recs = sorted(by_article[n], key=lambda r: r.template)
        pick = next(r for r in recs if r.template == DEMO_TEMPLATE) if n == 1 else rng.choice(recs)
        chosen.append((n, pick))
        rest.extend((n, r) for r in recs if r is not pick)
    if len(chosen) + len(rest) > HELDOUT_MAX:
        rest = rng.sample(rest, max(0, HELDOUT_MAX - len(chosen)))
    out = chosen + rest
    out.sort(key=lambda t: (t[0], t[1].template))
    return [r for _, r in out]


# ---------------------------------------------------------------------------------------------
# Checks and statistics
# ---------------------------------------------------------------------------------------------


def template_regex(tid: str) -> re.Pattern:
    parts = re.split(r"(\{[a-z]+\})", ALL_TEMPLATES[tid])
    return re.compile("^" + "".join(".+?" if p.startswith("{") else re.escape(p) for p in parts) + "$")


def check(train: list[Rec], held: list[Rec]) -> None:
    for r in train + held:
        assert r.instruction and r.output, r
        assert r.instruction == r.instruction.strip() and r.output == r.output.strip(), r
    held_res = [template_regex(t) for t in sorted(HELDOUT_IDS)]
    for r in train:
        assert r.template not in HELDOUT_IDS, r
        for rx in held_res:
            assert not rx.match(r.instruction), f"held-out phrasing leaks into train: {r}"
    assert all(r.template in HELDOUT_IDS for r in held)
    held_keys = {(r.instruction, r.input) for r in held}
    assert not held_keys & {(r.instruction, r.input) for r in train}
    demo = ALL_TEMPLATES[DEMO_TEMPLATE].format(n=1)
    assert demo == "대한민국헌법 제1조의 내용은 무엇인가요?"
    assert any(r.instruction == demo for r in held), "demo record missing from heldout"
    assert len(held) <= HELDOUT_MAX


def percentiles(values: list[int]) -> dict:
    v = sorted(values)
    if not v:
        return {}

    def pct(p: float) -> int:  # nearest rank
        k = max(1, -(-len(v) * p // 100))
        return v[int(k) - 1]

    return {"min": v[0], "p10": pct(10), "p25": pct(25), "p50": pct(50), "p75": pct(75),
            "p90": pct(90), "p95": pct(95), "p99": pct(99), "max": v[-1],
            "mean": round(sum(v) / len(v), 1)}


def split_stats(recs: list[Rec]) -> dict:
    kinds: dict[str, int] = {}
    templates: dict[str, int] = {}
    for r in recs:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
        templates[r.template] = templates.get(r.template, 0) + 1
    with_input = sum(1 for r in recs if r.input)
    return {
        "records": len(recs),
        "with_input": with_input,
        "with_input_fraction": round(with_input / len(recs), 4),
        "kinds": dict(sorted(kinds.items())),
        "output_chars": percentiles([len(r.output) for r in recs]),
        "instruction_chars": percentiles([len(r.instruction) for r in recs]),
        "input_chars_nonempty": percentiles([len(r.input) for r in recs if r.input]),
        "templates": {tid: {"text": ALL_TEMPLATES[tid], "records": templates[tid]}
                      for tid in sorted(templates)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="constitution.txt")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = ap.parse_args(argv)

    con = parse(args.src)
    train, pool = build(con)
    held = select_heldout(pool)
    random.Random(SHUFFLE_SEED).shuffle(train)
    check(train, held)

    args.out.mkdir(parents=True, exist_ok=True)
    for name, recs in (("train.jsonl", train), ("heldout.jsonl", held)):
        with open(args.out / name, "w", encoding="utf-8", newline="\n") as f:
            for r in recs:
                f.write(r.json() + "\n")

    # Re-read what was written: every line is an object with exactly three string keys.
    for name in ("train.jsonl", "heldout.jsonl"):
        for i, line in enumerate((args.out / name).read_text(encoding="utf-8").split("\n")[:-1], 1):
            obj = json.loads(line)
            assert list(obj) == ["instruction", "input", "output"], (name, i)
            assert all(isinstance(v, str) for v in obj.values()), (name, i)

    n_para = sum(len(a.paragraphs) for a in con.articles)
    stats = {
        "source": {
            "path": "data/korean-law/kolaw/constitution.txt",
            "sha256": hashlib.sha256(args.src.read_bytes()).hexdigest(),
            "chapters": len(con.chapters),
            "sections_and_subsections": [f"{h.path} {h.title}" for h in con.subdivisions],
            "articles": len(con.articles),
            "articles_with_paragraphs": sum(1 for a in con.articles if a.paragraphs),
            "paragraphs": n_para,
            "addenda_articles": len(con.addenda),
            "preamble_chars": len(con.preamble),
            "article_text_chars": percentiles([len(a.text) for a in con.articles]),
            "longest_articles": [
                {"article": a.number, "chars": len(a.text)}
                for a in sorted(con.articles, key=lambda a: (-len(a.text), a.number))[:5]
            ],
        },
        "seeds": {"heldout_sample": HELDOUT_SEED, "phrasing_choice": CHOICE_SEED,
                  "train_shuffle": SHUFFLE_SEED},
        "article_phrasings_per_article_in_train": ARTICLE_PHRASINGS_PER_ARTICLE,
        "paragraph_phrasings_per_paragraph_in_train": PARAGRAPH_PHRASINGS_PER_PARAGRAPH,
        "heldout_only_templates": {tid: ALL_TEMPLATES[tid] for tid in sorted(HELDOUT_IDS)},
        "heldout_template_leaks_into_train": 0,  # asserted by check()
        "heldout_articles_covered": len({re.search(r"제(\d+)조", r.instruction).group(1)
                                         for r in held}),
        "train": split_stats(train),
        "heldout": split_stats(held),
    }
    (args.out / "stats.json").write_text(
        json.dumps(stats, ensure_ascii=False, indent=2) + "\n", encoding="utf-8", newline="\n")
    print(f"train {len(train)} records ({stats['train']['with_input_fraction']:.1%} with input), "
          f"heldout {len(held)} records -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
