"""Loading `config/ivr/*.yaml` into an :class:`IvrConfig`, with every check an admin needs before going live.

The schema (pydantic) catches shapes; the checks here need the whole set of files: node references, flows used by
entry points, reachability (warning), loops without caller input, queues and skills known to routing, schedules,
prompt files and template placeholders. Each problem carries file:line:column and says what to change.
"""

from __future__ import annotations

import hashlib
import logging
import wave
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ivr.errors import ConfigError, ConfigProblem
from ivr.flow.config import EntryDef, FlowDef, IvrConfig, number_forms
from ivr.flow.context import TEMPLATE_RE, TEMPLATE_ROOTS
from ivr.flow.model import (INPUT_KINDS, BranchNode, CollectNode, Condition, EnrollVoiceNode, GotoNode,
                            IdentifyNode, IvrFile, LanguageMenuNode, MenuNode, Prompt, QueueNode,
                            SayNode, SetNode, Settings, VerifyVoiceNode)
from ivr.yamlconf import SourceMap, _describe, load_yaml_file

log = logging.getLogger(__name__)

NODE_KINDS = {"say", "play", "menu", "collect", "identify", "verify_voice", "enroll_voice", "set", "branch",
              "queue", "transfer", "hangup", "goto", "language_menu"}


# ---------------------------------------------------------------- graph helpers (shared with the interpreter)

def node_edges(node: Any) -> Iterator[tuple[tuple, str]]:
    """(path of the field inside the node, target node name) for every same-flow transition."""
    if isinstance(node, (SayNode, SetNode, CollectNode, LanguageMenuNode)):
        yield ("next",), node.next
    if isinstance(node, MenuNode):
        for k, target in node.options.items():
            yield ("options", k), target
    if isinstance(node, (MenuNode, CollectNode)) and node.on_failure:
        yield ("on_failure",), node.on_failure
    if isinstance(node, IdentifyNode):
        for f in ("on_found", "on_not_found", "on_failed", "on_locked"):
            if getattr(node, f):
                yield (f,), getattr(node, f)
    if isinstance(node, (VerifyVoiceNode, EnrollVoiceNode)):
        for k, target in node.branches.items():
            yield ("branches", k), target
        yield ("fallback",), node.fallback
    if isinstance(node, BranchNode):
        for i, case in enumerate(node.cases):
            yield ("cases", i, "next"), case.next
        yield ("else",), node.else_


def node_prompts(node: Any) -> Iterator[tuple[tuple, Prompt]]:
    for f in ("prompt", "invalid_prompt", "no_input_prompt"):
        for i, p in enumerate(getattr(node, f, None) or []):
            yield (f, i), p
    if isinstance(node, IdentifyNode) and node.fallback:
        for f in ("account_prompt", "pin_prompt", "invalid_prompt", "no_input_prompt"):
            for i, p in enumerate(getattr(node.fallback, f)):
                yield ("fallback", f, i), p
    if isinstance(node, (VerifyVoiceNode, EnrollVoiceNode)):
        for k, ps in node.retry_prompts.items():
            for i, p in enumerate(ps):
                yield ("retry_prompts", k, i), p


def _conditions(cond: Condition, path: tuple) -> Iterator[tuple[tuple, Condition]]:
    yield path, cond
    for key in ("all", "any"):
        for i, c in enumerate(getattr(cond, key) or []):
            yield from _conditions(c, path + (key, i))
    if cond.not_ is not None:
        yield from _conditions(cond.not_, path + ("not",))


def _yaml_path(smap: SourceMap, path: tuple) -> tuple:
    """Model path -> YAML path: a single prompt written without a list is the model's item 0."""
    out: tuple = ()
    for x in path:
        if isinstance(x, int) and out + (x,) not in smap.positions and out in smap.positions:
            continue
        out += (x,)
    return out


# ---------------------------------------------------------------- schema errors

def _schema_problems(exc: ValidationError, smap: SourceMap) -> list[ConfigProblem]:
    out = []
    for err in exc.errors():
        loc = []
        raw = [x for x in err["loc"] if not (isinstance(x, str) and (x.startswith("function-") or x == "variants"))]
        for i, x in enumerate(raw):
            # Discriminated unions insert the tag ("menu") after the node name; it is not a YAML key.
            if i >= 1 and raw[i - 1] != "kind" and len(loc) >= 2 and loc[-2] == "nodes" and x in NODE_KINDS:
                continue
            loc.append(x)
        loc_t = tuple(loc)
        msg = _describe({**err, "loc": loc_t}).replace("Value error, ", "")
        if err.get("type") == "union_tag_invalid":
            ctx = err.get("ctx", {})
            msg = (f"{'.'.join(map(str, loc_t))}: unknown node kind {ctx.get('tag')!r}: use one of "
                   f"{ctx.get('expected_tags')}")
            loc_t = loc_t + ("kind",)
        elif err.get("type") == "union_tag_not_found":
            msg = f"{'.'.join(map(str, loc_t))}: node has no 'kind': add e.g. 'kind: say'"
        if err.get("type") == "extra_forbidden":
            line, col = smap.positions.get(loc_t + ("__key__",), smap.locate(loc_t))
            out.append(ConfigProblem(smap.file, line, col, msg))
        elif err.get("type") == "missing":
            out.append(smap.problem(loc_t[:-1], msg))
        else:
            out.append(smap.problem(loc_t, msg))
    return out


# ---------------------------------------------------------------- loading

def _yaml_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[ConfigProblem]]:
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted([*p.glob("*.yaml"), *p.glob("*.yml")])
            if not found:
                problems.append(ConfigProblem(str(p), 0, 0, "no .yaml files in this directory: add the IVR flows"))
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            problems.append(ConfigProblem(str(p), 0, 0, "file not found: check the path"))
    return files, problems


def build_config(paths: Iterable[str | Path], known_queues: Iterable[str] | None = None,
                 known_skills: Iterable[str] | None = None) -> tuple[IvrConfig | None, list[ConfigProblem]]:
    """Load and check; returns (config or None when there are errors, all problems including warnings)."""
    files, problems = _yaml_files(paths)
    parsed: list[tuple[Path, IvrFile, SourceMap]] = []
    digest = hashlib.sha256()
    for f in files:
        try:
            data, smap = load_yaml_file(f)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        digest.update(str(f.name).encode() + b"\0" + f.read_bytes() + b"\0")
        if not isinstance(data, dict):
            problems.append(smap.problem((), "the top level must be a mapping with settings, schedules, "
                                             "entry_points and flows"))
            continue
        try:
            parsed.append((f, IvrFile.model_validate(data), smap))
        except ValidationError as exc:
            problems.extend(_schema_problems(exc, smap))
    if not parsed:
        if not problems:
            problems.append(ConfigProblem(",".join(map(str, paths)), 0, 0, "no IVR configuration found"))
        return None, problems
    checker = _Checker(parsed, set(known_queues) if known_queues is not None else None,
                       set(known_skills) if known_skills is not None else None)
    checker.run()
    problems.extend(checker.problems)
    if any(p.severity == "error" for p in problems):
        return None, problems
    config = IvrConfig(settings=checker.settings, flows=checker.flows, schedules=checker.schedules,
                       entry_points=tuple(checker.entries), version=digest.hexdigest()[:12],
                       files=tuple(str(f) for f, _, _ in parsed),
                       warnings=tuple(p for p in problems if p.severity != "error"))
    return config, problems


def validate_paths(paths: Iterable[str | Path], known_queues: Iterable[str] | None = None,
                   known_skills: Iterable[str] | None = None) -> list[ConfigProblem]:
    """Every problem (errors and warnings) in the given files/directories; empty means clean.
    ``None`` for the known sets skips those checks (routing not configured)."""
    _, problems = build_config(paths, known_queues, known_skills)
    return problems


def load_ivr_config(directory: str | Path | Iterable[str | Path], known_queues: Iterable[str] | None = None,
                    known_skills: Iterable[str] | None = None) -> IvrConfig:
    """The server's entry point: raises ConfigError listing the errors (and warnings) when anything is wrong;
    warnings of a good configuration are logged and kept in ``config.warnings``."""
    paths = [directory] if isinstance(directory, (str, Path)) else list(directory)
    config, problems = build_config(paths, known_queues, known_skills)
    if config is None:
        raise ConfigError(sorted(problems, key=lambda p: (p.severity != "error", p.file, p.line, p.column)))
    for w in config.warnings:
        log.warning("%s", w)
    return config


# ---------------------------------------------------------------- checks

class _Checker:
    def __init__(self, parsed: list[tuple[Path, IvrFile, SourceMap]], queues: set[str] | None,
                 skills: set[str] | None):
        self.parsed = parsed
        self.queues, self.skills = queues, skills
        self.problems: list[ConfigProblem] = []
        self.flows: dict[str, FlowDef] = {}
        self.schedules: dict = {}
        self.schedule_src: dict[str, tuple[SourceMap, tuple]] = {}
        self.entries: list[EntryDef] = []
        self.settings = Settings()
        self.settings_src: tuple[SourceMap, tuple] | None = None

    def err(self, smap: SourceMap, path: tuple, msg: str, severity: str = "error") -> None:
        self.problems.append(smap.problem(_yaml_path(smap, path), msg, severity))

    def run(self) -> None:
        self._merge()
        self._check_entries()
        for fd in self.flows.values():
            self._check_flow(fd)
        self._check_reachability()
        self._check_input_loops()

    def _merge(self) -> None:
        for f, model, smap in self.parsed:
            if model.settings is not None:
                if self.settings_src is not None:
                    first = self.settings_src[0].locate(("settings",))
                    self.err(smap, ("settings",), f"settings are already given in {self.settings_src[0].file}:"
                                                  f"{first[0]}: keep one settings section")
                else:
                    self.settings, self.settings_src = model.settings, (smap, ("settings",))
            prompt_dir = (f.parent / model.prompt_dir).resolve() if model.prompt_dir else f.parent.resolve()
            if model.prompt_dir and not prompt_dir.is_dir():
                self.err(smap, ("prompt_dir",), f"prompt_dir {model.prompt_dir!r} is not a directory (resolved to "
                                                f"{prompt_dir}); it is relative to this file")
            for name, sched in model.schedules.items():
                if name in self.schedule_src:
                    other = self.schedule_src[name][0]
                    self.err(smap, ("schedules", name, "__key__"),
                             f"schedule {name!r} is already defined in {other.file}: rename one of them")
                    continue
                self.schedules[name] = sched
                self.schedule_src[name] = (smap, ("schedules", name))
            for name, flow in model.flows.items():
                if name in self.flows:
                    self.err(smap, ("flows", name, "__key__"),
                             f"flow {name!r} is already defined in {self.flows[name].file}: rename one of them")
                    continue
                self.flows[name] = FlowDef(name, flow, str(f), smap, prompt_dir)
            for i, e in enumerate(model.entry_points):
                line, col = smap.locate(("entry_points", i))
                self.entries.append(EntryDef(e, str(f), line, col))
        for lang_path, lang in [(("settings", "default_language"), self.settings.default_language)]:
            if lang not in self.settings.languages and self.settings_src:
                self.err(self.settings_src[0], lang_path, f"default_language {lang!r} is not in languages "
                                                          f"{self.settings.languages}: add it there")

    def _smap_of(self, entry: EntryDef) -> SourceMap:
        return next(s for f, _, s in self.parsed if str(f) == entry.file)

    def _check_entries(self) -> None:
        if self.settings.default_flow is None:
            f, _, smap = self.parsed[0]
            where = self.settings_src[0] if self.settings_src else smap
            self.err(where, ("settings",) if self.settings_src else (),
                     "no default flow for unknown dialed numbers: add 'settings: {default_flow: NAME}'")
        elif self.settings.default_flow not in self.flows:
            self.err(self.settings_src[0], ("settings", "default_flow"),
                     f"default_flow {self.settings.default_flow!r} is not a flow; defined flows: "
                     f"{', '.join(sorted(self.flows)) or 'none'}")
        if not self.entries:
            self.err(self.parsed[0][2], (), "no entry_points: map at least one dialed number to a flow",
                     "warning")
        seen: dict[str, EntryDef] = {}
        for idx, e in enumerate(self.entries):
            smap = self._smap_of(e)
            ix = self._entry_index(e)
            if e.entry.flow not in self.flows:
                self.err(smap, ("entry_points", ix, "flow"),
                         f"entry point goes to unknown flow {e.entry.flow!r}; defined flows: "
                         f"{', '.join(sorted(self.flows)) or 'none'}")
            if e.entry.dnis and not e.entry.dnis.endswith("*"):
                forms = number_forms(e.entry.dnis, self.settings.region)
                key = min(forms, key=len) if forms else e.entry.dnis
                key = next((x for x in forms if x.startswith("+")), key)
                if key in seen:
                    self.err(smap, ("entry_points", ix, "dnis"),
                             f"dialed number {e.entry.dnis!r} is already mapped at {seen[key].file}:"
                             f"{seen[key].line}: remove one of the two entries")
                else:
                    seen[key] = e

    def _entry_index(self, e: EntryDef) -> int:
        f = next(m for p, m, _ in self.parsed if str(p) == e.file)
        return next(i for i, x in enumerate(f.entry_points) if x is e.entry)

    def _ref(self, fd: FlowDef, path: tuple, target: str, what: str) -> None:
        if target not in fd.flow.nodes:
            self.err(fd.smap, path, f"{what} {target!r} is not a node of flow {fd.name!r}; its nodes are: "
                                    f"{', '.join(sorted(fd.flow.nodes))}")

    def _check_flow(self, fd: FlowDef) -> None:
        base = ("flows", fd.name)
        self._ref(fd, base + ("start",), fd.flow.start, "start node")
        langs = set(self.settings.languages)
        if fd.flow.language is not None and fd.flow.language not in langs:
            self.err(fd.smap, base + ("language",), f"language {fd.flow.language!r} is not in settings.languages "
                                                    f"{sorted(langs)}")
        for name, node in fd.flow.nodes.items():
            npath = base + ("nodes", name)
            for sub, target in node_edges(node):
                self._ref(fd, npath + sub, target, "next node")
            if isinstance(node, GotoNode):
                target_flow = self.flows.get(node.flow or fd.name)
                if target_flow is None:
                    self.err(fd.smap, npath + ("flow",), f"goto to unknown flow {node.flow!r}; defined flows: "
                                                         f"{', '.join(sorted(self.flows))}")
                elif node.node is not None:
                    if node.node not in target_flow.flow.nodes:
                        self.err(fd.smap, npath + ("node",), f"goto node {node.node!r} is not a node of flow "
                                                             f"{target_flow.name!r}")
            for sub, prompt in node_prompts(node):
                self._check_prompt(fd, npath + sub, prompt)
            if isinstance(node, (QueueNode, SetNode)):
                if node.queue is not None and self.queues is not None and node.queue not in self.queues:
                    self.err(fd.smap, npath + ("queue",), f"unknown queue {node.queue!r}: define it in "
                                                          f"config/queues.yaml or use one of "
                                                          f"{', '.join(sorted(self.queues)) or 'none'}")
                for i, sk in enumerate(node.skills or []):
                    if self.skills is not None and sk not in self.skills:
                        self.err(fd.smap, npath + ("skills", i), f"unknown skill {sk!r}: define it in "
                                                                 f"config/queues.yaml or use one of "
                                                                 f"{', '.join(sorted(self.skills)) or 'none'}")
            if isinstance(node, SetNode) and node.language is not None and node.language not in langs:
                self.err(fd.smap, npath + ("language",), f"language {node.language!r} is not in settings.languages "
                                                         f"{sorted(langs)}")
            if isinstance(node, LanguageMenuNode):
                for k, lang in node.options.items():
                    if lang not in langs:
                        self.err(fd.smap, npath + ("options", k), f"language {lang!r} is not in "
                                                                  f"settings.languages {sorted(langs)}")
            if isinstance(node, BranchNode):
                for i, case in enumerate(node.cases):
                    for cpath, cond in _conditions(case.if_, npath + ("cases", i, "if")):
                        for key in ("open", "holiday"):
                            sched = getattr(cond, key)
                            if sched is not None and sched not in self.schedules:
                                self.err(fd.smap, cpath + (key,),
                                         f"unknown schedule {sched!r}: define it under 'schedules:' or use one of "
                                         f"{', '.join(sorted(self.schedules)) or 'none'}")
            if isinstance(node, (VerifyVoiceNode, EnrollVoiceNode)) and "accept" not in node.branches:
                self.err(fd.smap, npath + ("branches",), "no 'accept' branch: add 'accept: NODE' so verified "
                                                         "callers go on", "warning")

    def _check_prompt(self, fd: FlowDef, path: tuple, prompt: Prompt) -> None:
        langs = set(self.settings.languages)
        keys = set(prompt.variants)
        for lang, variant in prompt.variants.items():
            vpath = path if lang == "*" else path + (lang,)
            if lang != "*" and lang not in langs:
                self.err(fd.smap, vpath, f"prompt language {lang!r} is not in settings.languages {sorted(langs)}: "
                                         "add it there or fix the code")
            if variant.wav:
                wpath = fd.prompt_dir / variant.wav
                if not wpath.is_file():
                    self.err(fd.smap, vpath + ("wav",) if lang != "*" else path,
                             f"prompt file {variant.wav!r} does not exist (looked for {wpath}); record it, fix the "
                             "name, or give 'text' instead")
                else:
                    try:
                        with wave.open(str(wpath), "rb") as w:
                            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                                raise wave.Error("not 16-bit mono")
                    except (wave.Error, EOFError, OSError) as exc:
                        self.err(fd.smap, vpath, f"prompt file {variant.wav!r} is not a 16-bit mono PCM WAV "
                                                 f"({exc}): convert it, e.g. sox in.wav -r 8000 -c 1 -b 16 out.wav")
            if variant.text:
                for m in TEMPLATE_RE.finditer(variant.text):
                    root = m.group(1).split(".")[0]
                    if root not in TEMPLATE_ROOTS:
                        self.err(fd.smap, vpath, f"placeholder {{{m.group(1)}}} is unknown: placeholders start "
                                                 f"with {', '.join(TEMPLATE_ROOTS)} (e.g. {{customer.first_name}})")
        if "*" not in keys:
            for lang in sorted(langs - keys):
                self.err(fd.smap, path, f"prompt has no {lang!r} variant: callers in that language will hear "
                                        f"{sorted(keys)[0]!r}; add '{lang}: ...'", "warning")

    # ------------------------------------------------ graph checks

    def _targets(self, fd: FlowDef, name: str) -> list[tuple[str, str]]:
        node = fd.flow.nodes[name]
        out = [(fd.name, t) for _, t in node_edges(node) if t in fd.flow.nodes]
        if isinstance(node, GotoNode):
            tf = self.flows.get(node.flow or fd.name)
            if tf is not None:
                t = node.node or tf.flow.start
                if t in tf.flow.nodes:
                    out.append((tf.name, t))
        return out

    def _check_reachability(self) -> None:
        roots = {e.entry.flow for e in self.entries} | {self.settings.default_flow}
        seen: set[tuple[str, str]] = set()
        stack = [(f, self.flows[f].flow.start) for f in roots
                 if f in self.flows and self.flows[f].flow.start in self.flows[f].flow.nodes]
        while stack:
            cur = stack.pop()
            if cur in seen:
                continue
            seen.add(cur)
            stack.extend(self._targets(self.flows[cur[0]], cur[1]))
        for fd in self.flows.values():
            if fd.flow.start not in fd.flow.nodes:
                continue                                  # already an error; every node would look unreachable
            reached = [n for n in fd.flow.nodes if (fd.name, n) in seen]
            if not reached:
                self.err(fd.smap, ("flows", fd.name, "__key__"),
                         f"flow {fd.name!r} is never used: map a dialed number to it in entry_points, goto it, "
                         "or delete it", "warning")
                continue
            for n in fd.flow.nodes:
                if (fd.name, n) not in seen:
                    self.err(fd.smap, ("flows", fd.name, "nodes", n, "__key__"),
                             f"node {n!r} is unreachable: no node leads to it; link it (next/options/branches) "
                             "or delete it", "warning")

    def _check_input_loops(self) -> None:
        """Tarjan's SCC over the nodes that do not wait for the caller: any cycle there spins forever."""
        graph: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for fd in self.flows.values():
            for name, node in fd.flow.nodes.items():
                if node.kind not in INPUT_KINDS:
                    graph[(fd.name, name)] = [t for t in self._targets(fd, name)
                                              if self.flows[t[0]].flow.nodes[t[1]].kind not in INPUT_KINDS]
        index: dict = {}
        low: dict = {}
        on_stack: set = set()
        stack: list = []
        counter = [0]
        sccs: list[list[tuple[str, str]]] = []

        def strong(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on_stack.add(v)
            for w in graph.get(v, []):
                if w not in index:
                    strong(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph.get(v, []):
                    sccs.append(comp)

        for v in graph:
            if v not in index:
                strong(v)
        for comp in sccs:
            comp.sort()
            flow, node = comp[0]
            fd = self.flows[flow]
            names = " -> ".join(f"{f}.{n}" if f != flow else n for f, n in comp)
            self.err(fd.smap, ("flows", flow, "nodes", node, "__key__"),
                     f"loop without caller input: {names} -> {node} never waits for a key press or speech; "
                     "put a menu/collect in the loop or end it with queue/transfer/hangup")
