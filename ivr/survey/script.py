"""Survey scripts: ``config/surveys/*.yaml`` loaded into frozen :class:`SurveyScript` objects.

One script per file. The schema (pydantic, unknown keys refused) catches shapes; the checks here catch what a
schema cannot: duplicate question ids, digits that a keypad cannot send, a CSAT question that is not a 1..n
scale, an opt-out digit that is also an answer, a prompt without a text for a declared language, a WAV that does
not exist. Every problem is a :class:`~ivr.errors.ConfigProblem` with file:line:column, as for the IVR files,
because admins fix scripts from ``contact-server validate`` output.
"""

from __future__ import annotations

import enum
import os
import re
import wave
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from ivr.errors import ConfigError, ConfigProblem
from ivr.flow.actions import PromptRef
from ivr.flow.model import Prompt, Strict
from ivr.yamlconf import SourceMap, _describe, load_yaml_file

ANSWER_DIGITS = "0123456789"
KEYPAD = ANSWER_DIGITS + "*#"
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
WILDCARD = "*"

# What the engine says by itself when a script has no prompt of its own for it.
DEFAULT_PROMPTS: dict[str, dict[str, str]] = {
    "invalid_prompt": {"it": "Scelta non valida.", "en": "That is not a valid choice."},
    "no_input_prompt": {"it": "Non ho ricevuto nessuna risposta.", "en": "I did not get an answer."},
    "opt_out_prompt": {"it": "Va bene, non la contatteremo più per i sondaggi. Arrivederci.",
                       "en": "All right, we will not contact you for surveys again. Goodbye."},
}


class QuestionKind(str, enum.Enum):
    SCALE = "scale"
    YES_NO = "yes_no"
    CHOICE = "choice"


# ---------------------------------------------------------------- the loaded script

@dataclass(frozen=True, slots=True)
class PromptText:
    """One language's prompt: text for TTS and/or a recorded WAV (absolute path; the WAV wins)."""

    text: str | None
    wav: str | None


@dataclass(frozen=True)
class SurveyPrompt:
    """A prompt per language code; ``*`` is the text for every language."""

    variants: Mapping[str, PromptText]

    def has(self, language: str) -> bool:
        return language in self.variants or WILDCARD in self.variants

    def ref(self, language: str) -> PromptRef:
        """What the prompt renderer plays for ``language`` (``KeyError`` when the prompt has no such text)."""
        v = self.variants.get(language) or self.variants[WILDCARD]
        return PromptRef(text=v.text, wav=v.wav, language=language, template=v.text)

    @classmethod
    def of(cls, texts: Mapping[str, str]) -> "SurveyPrompt":
        return cls({lang: PromptText(text, None) for lang, text in texts.items()})


@dataclass(frozen=True, slots=True)
class Option:
    digit: str
    value: int | str | bool
    label: str


@dataclass(frozen=True)
class Question:
    id: str
    kind: QuestionKind
    text: SurveyPrompt
    options: Mapping[str, Option]
    retries: int = 2
    timeout: float = 8.0

    def option(self, digit: str) -> Option | None:
        return self.options.get(digit)


@dataclass(frozen=True)
class SurveyScript:
    name: str
    title: str
    languages: tuple[str, ...]
    questions: tuple[Question, ...]
    csat_question: str | None
    opt_out_digit: str | None
    intro: SurveyPrompt | None
    closing: SurveyPrompt
    source: str
    invalid_prompt: SurveyPrompt = field(default_factory=lambda: SurveyPrompt.of(DEFAULT_PROMPTS["invalid_prompt"]))
    no_input_prompt: SurveyPrompt = field(default_factory=lambda: SurveyPrompt.of(DEFAULT_PROMPTS["no_input_prompt"]))
    opt_out_prompt: SurveyPrompt = field(default_factory=lambda: SurveyPrompt.of(DEFAULT_PROMPTS["opt_out_prompt"]))

    def question(self, id: str) -> Question:
        for q in self.questions:
            if q.id == id:
                return q
        raise KeyError(f"survey {self.name!r} has no question {id!r}")

    def csat_scale(self) -> tuple[int, int] | None:
        if self.csat_question is None:
            return None
        values = [int(o.value) for o in self.question(self.csat_question).options.values()]
        return min(values), max(values)

    def language(self, wanted: str | None) -> str:
        """``wanted`` when the script speaks it, else its first (default) language."""
        if wanted in self.languages:
            return wanted  # type: ignore[return-value]
        if wanted:
            base = wanted.split("-")[0]
            if base in self.languages:
                return base
        return self.languages[0]


# ---------------------------------------------------------------- the schema

class _Scale(Strict):
    min: int = 1
    max: int = 5


class _OptionModel(Strict):
    value: int | str | bool | None = None
    label: str | None = None


class _QuestionModel(Strict):
    id: str = Field(min_length=1, max_length=64)
    kind: QuestionKind
    text: Prompt
    scale: _Scale | None = None
    options: dict[str, _OptionModel] | None = None
    retries: int = Field(2, ge=0, le=5)
    timeout: float = Field(8.0, gt=0, le=60)


class _ScriptModel(Strict):
    name: str | None = Field(None, max_length=64)
    title: str = ""
    languages: list[str] = Field(default_factory=lambda: ["it"], min_length=1)
    csat_question: str | None = None
    intro: Prompt | None = None
    questions: list[_QuestionModel] = Field(min_length=1)
    opt_out_digit: str | int | None = None
    closing: Prompt
    invalid_prompt: Prompt | None = None
    no_input_prompt: Prompt | None = None
    opt_out_prompt: Prompt | None = None


def _schema_problems(exc: ValidationError, smap: SourceMap) -> list[ConfigProblem]:
    out = []
    for err in exc.errors():
        loc = tuple(x for x in err["loc"]
                    if not (isinstance(x, str) and (x.startswith("function-") or x == "variants")))
        msg = _describe({**err, "loc": loc}).replace("Value error, ", "")
        if err.get("type") == "extra_forbidden":
            line, col = smap.positions.get(loc + ("__key__",), smap.locate(loc))
            out.append(ConfigProblem(smap.file, line, col, msg))
        elif err.get("type") == "missing":
            out.append(smap.problem(loc[:-1], msg))
        else:
            out.append(smap.problem(loc, msg))
    return out


# ---------------------------------------------------------------- checks and building

class _Builder:
    def __init__(self, path: Path, smap: SourceMap):
        self.path = path
        self.smap = smap
        self.problems: list[ConfigProblem] = []

    def err(self, yaml_path: tuple, message: str, *, at_key: bool = False) -> None:
        if at_key and yaml_path + ("__key__",) in self.smap.positions:
            line, col = self.smap.positions[yaml_path + ("__key__",)]
            self.problems.append(ConfigProblem(self.smap.file, line, col, message))
        else:
            self.problems.append(self.smap.problem(yaml_path, message))

    def prompt(self, model: Prompt, yaml_path: tuple, languages: list[str], what: str) -> SurveyPrompt:
        variants: dict[str, PromptText] = {}
        for lang, v in model.variants.items():
            vpath = yaml_path + ((lang,) if lang != WILDCARD else ())
            if lang != WILDCARD and lang not in languages:
                self.err(vpath, f"{what}: language {lang!r} is not in 'languages' ({', '.join(languages)}): add it "
                                "there or remove this text", at_key=True)
            wav = None
            if v.wav:
                wpath = (self.path.parent / v.wav).resolve()
                wav = os.path.normpath(wpath)
                if not wpath.is_file():
                    self.err(vpath, f"{what}: prompt file {v.wav!r} does not exist (looked for {wpath}); record "
                                    "it, fix the path (relative to this file) or use a text")
                else:
                    try:
                        with wave.open(str(wpath), "rb") as w:
                            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                                raise wave.Error("not 16-bit mono")
                    except (wave.Error, EOFError, OSError) as exc:
                        self.err(vpath, f"{what}: prompt file {v.wav!r} is not a 16-bit mono PCM WAV ({exc}): "
                                        "convert it, e.g. sox in.wav -r 8000 -c 1 -b 16 out.wav")
            variants[lang] = PromptText(v.text, wav)
        result = SurveyPrompt(variants)
        missing = [lang for lang in languages if not result.has(lang)]
        if missing:
            self.err(yaml_path, f"{what}: no text for {', '.join(map(repr, missing))}: add "
                                f"{' and '.join(f'{m}: ...' for m in missing)} (every prompt needs each language "
                                "listed in 'languages')")
        return result

    def system_prompt(self, model: Prompt | None, key: str, languages: list[str], needed: bool) -> SurveyPrompt:
        if model is not None:
            return self.prompt(model, (key,), languages, key)
        default = SurveyPrompt.of(DEFAULT_PROMPTS[key])
        missing = [lang for lang in languages if not default.has(lang)]
        if needed and missing:
            self.err((), f"no built-in {key} for {', '.join(map(repr, missing))}: add '{key}:' with a text for "
                         f"{' and '.join(missing)}")
        return default

    def question(self, i: int, q: _QuestionModel, languages: list[str]) -> Question:
        base = ("questions", i)
        text = self.prompt(q.text, base + ("text",), languages, f"question {q.id!r} text")
        options: dict[str, Option] = {}
        if q.kind is QuestionKind.SCALE:
            if q.options is not None:
                self.err(base + ("options",), f"question {q.id!r} is a scale: its digits come from 'scale: "
                                              "{min, max}'; remove 'options' or use kind: choice", at_key=True)
            if q.scale is None:
                self.err(base, f"question {q.id!r} (kind: scale) needs 'scale: {{min: 1, max: 5}}'")
            else:
                lo, hi = q.scale.min, q.scale.max
                if not (0 <= lo <= 9 and 0 <= hi <= 9):
                    self.err(base + ("scale",), f"question {q.id!r}: scale {lo}..{hi} does not fit the keypad: "
                                                "min and max must be digits 0..9")
                elif lo >= hi:
                    self.err(base + ("scale",), f"question {q.id!r}: scale min ({lo}) must be below max ({hi})")
                else:
                    options = {str(d): Option(str(d), d, str(d)) for d in range(lo, hi + 1)}
        elif q.kind is QuestionKind.YES_NO:
            for key in ("scale", "options"):
                if getattr(q, key) is not None:
                    self.err(base + (key,), f"question {q.id!r} is yes_no (1 = yes, 2 = no): remove {key!r} or use "
                                            "kind: choice", at_key=True)
            options = {"1": Option("1", True, "yes"), "2": Option("2", False, "no")}
        else:
            if q.scale is not None:
                self.err(base + ("scale",), f"question {q.id!r} is a choice: remove 'scale' or use kind: scale",
                         at_key=True)
            if not q.options:
                self.err(base, f"question {q.id!r} (kind: choice) needs 'options' with at least two digits, e.g. "
                               "options: {\"1\": {value: speed, label: Velocità}}")
            else:
                if len(q.options) < 2:
                    self.err(base + ("options",), f"question {q.id!r}: a choice needs at least two options")
                seen_values: dict[Any, str] = {}
                for digit, o in q.options.items():
                    opath = base + ("options", digit)
                    if len(digit) != 1 or digit not in ANSWER_DIGITS:
                        self.err(opath, f"question {q.id!r}: option key {digit!r} is not a keypad digit: use a "
                                        "single digit 0-9 (quote it: \"1\")", at_key=True)
                        continue
                    value = o.value if o.value is not None else (o.label if o.label is not None else digit)
                    if value in seen_values:
                        self.err(opath, f"question {q.id!r}: options {seen_values[value]!r} and {digit!r} have the "
                                        f"same value {value!r}: give each option its own value", at_key=True)
                    seen_values.setdefault(value, digit)
                    options[digit] = Option(digit, value, o.label if o.label is not None else str(value))
        return Question(q.id, q.kind, text, dict(sorted(options.items())), q.retries, float(q.timeout))

    def build(self, m: _ScriptModel) -> SurveyScript | None:
        name = m.name if m.name is not None else self.path.stem
        if not NAME_RE.match(name):
            self.err(("name",) if m.name is not None else (),
                     f"survey name {name!r}: use letters, digits, '_' and '-' (it is stored with every response)")
        languages = m.languages
        for i, lang in enumerate(languages):
            if not LANGUAGE_RE.match(lang):
                self.err(("languages", i), f"language {lang!r} is not a language code like 'it' or 'en'")
            elif lang in languages[:i]:
                self.err(("languages", i), f"language {lang!r} is listed twice")
        intro = self.prompt(m.intro, ("intro",), languages, "intro") if m.intro is not None else None
        closing = self.prompt(m.closing, ("closing",), languages, "closing")
        questions: list[Question] = []
        first_at: dict[str, int] = {}
        for i, qm in enumerate(m.questions):
            if not NAME_RE.match(qm.id):
                self.err(("questions", i, "id"), f"question id {qm.id!r}: use letters, digits, '_' and '-'")
            if qm.id in first_at:
                self.err(("questions", i, "id"), f"duplicate question id {qm.id!r} (question #{first_at[qm.id] + 1} "
                                                 "has it): give each question its own id")
            first_at.setdefault(qm.id, i)
            questions.append(self.question(i, qm, languages))
        if m.csat_question is not None:
            if m.csat_question not in first_at:
                self.err(("csat_question",), f"csat_question {m.csat_question!r} is not a question of this survey "
                                             f"(ids: {', '.join(first_at)})")
            else:
                q = questions[first_at[m.csat_question]]
                if q.kind is not QuestionKind.SCALE:
                    self.err(("csat_question",), f"csat_question {m.csat_question!r} is a {q.kind.value} question: "
                                                 "CSAT needs a scale question (kind: scale, e.g. 1..5)")
        opt_out = None
        if m.opt_out_digit is not None:
            opt_out = str(m.opt_out_digit)
            if len(opt_out) != 1 or opt_out not in KEYPAD:
                self.err(("opt_out_digit",), f"opt_out_digit {opt_out!r} is not a single keypad key: use one of "
                                             "0-9, * or # (quoted: \"9\")")
            else:
                for i, q in enumerate(questions):
                    if opt_out in q.options:
                        self.err(("opt_out_digit",), f"opt_out_digit {opt_out!r} is also an answer of question "
                                                     f"{q.id!r} (line {self.smap.locate(('questions', i))[0]}): "
                                                     "pick a digit no question uses, e.g. 9, * or #")
        invalid = self.system_prompt(m.invalid_prompt, "invalid_prompt", languages, True)
        no_input = self.system_prompt(m.no_input_prompt, "no_input_prompt", languages, True)
        opt_out_prompt = self.system_prompt(m.opt_out_prompt, "opt_out_prompt", languages, opt_out is not None)
        if self.problems:
            return None
        return SurveyScript(name=name, title=m.title or name, languages=tuple(languages), questions=tuple(questions),
                            csat_question=m.csat_question, opt_out_digit=opt_out, intro=intro, closing=closing,
                            source=str(self.path), invalid_prompt=invalid, no_input_prompt=no_input,
                            opt_out_prompt=opt_out_prompt)


# ---------------------------------------------------------------- public API

def load_survey_script(path: str | Path) -> SurveyScript:
    """One script file; raises :class:`ConfigError` listing every problem with its line."""
    p = Path(path)
    data, smap = load_yaml_file(p)
    if not isinstance(data, dict):
        raise ConfigError([smap.problem((), "a survey script must be a mapping with 'questions' and 'closing' "
                                            "(see config/surveys/csat.yaml)")])
    try:
        model = _ScriptModel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_schema_problems(exc, smap)) from None
    builder = _Builder(p, smap)
    script = builder.build(model)
    if script is None:
        raise ConfigError(builder.problems)
    return script


def survey_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob("*.y*ml") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_survey_scripts(directory: str | Path) -> dict[str, SurveyScript]:
    """Every ``*.yaml`` script of ``directory`` by name; an absent directory has none. Problems of all files
    are raised together, so one ``validate`` run shows them all."""
    d = Path(directory)
    if not d.is_dir():
        if d.exists():
            raise ConfigError([ConfigProblem(str(d), 0, 0, "survey scripts must be a directory of *.yaml files")])
        return {}
    problems: list[ConfigProblem] = []
    scripts: dict[str, SurveyScript] = {}
    for f in survey_files(d):
        try:
            script = load_survey_script(f)
        except ConfigError as exc:
            problems += exc.problems
            continue
        other = scripts.get(script.name)
        if other is not None:
            problems.append(ConfigProblem(str(f), 1, 1, f"survey name {script.name!r} is already used by "
                                                        f"{other.source}: rename one of them"))
            continue
        scripts[script.name] = script
    if problems:
        raise ConfigError(problems)
    return scripts
