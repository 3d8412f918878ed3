"""``contact-server validate``: every configuration file of an install, checked the way ``serve`` loads them."""

from __future__ import annotations

from pathlib import Path

from ivr.errors import ConfigError, ConfigProblem


def validate_tree(path: Path) -> list[ConfigProblem]:
    """Problems (errors and warnings) of a config directory (server.yaml, queues.yaml, ivr/, surveys/) or of
    one file (a survey script when it lies in a ``surveys`` folder)."""
    from ivr.config import load_server_config
    from ivr.flow.validate import validate_paths
    from ivr.survey.script import load_survey_script
    from routing.config import load_routing_config

    problems: list[ConfigProblem] = []
    if path.is_file():
        if path.parent.name == "surveys":
            return _collect(lambda: load_survey_script(path))
        if path.name == "queues.yaml":
            _, surveys = _surveys(path.parent / "surveys")
            return _collect(lambda: load_routing_config(path, known_surveys=surveys))
        if path.name == "server.yaml":
            return _collect(lambda: load_server_config(path))
        queues_file = path.parent.parent / "queues.yaml"
        queues, skills = _known(queues_file) if queues_file.exists() else (None, None)
        return validate_paths([path], queues, skills)
    if not path.exists():
        return [ConfigProblem(str(path), 0, 0, "no such file or directory")]
    server_file = path / "server.yaml"
    if server_file.exists():
        problems += _collect(lambda: load_server_config(server_file))
    survey_problems, surveys = _surveys(path / "surveys")
    problems += survey_problems
    queues_file = path / "queues.yaml"
    queues = skills = None
    if queues_file.exists():
        q = _collect(lambda: load_routing_config(queues_file, known_surveys=surveys))
        problems += q
        if not any(p.severity == "error" for p in q):
            queues, skills = _known(queues_file)
    if (path / "ivr").is_dir():
        problems += validate_paths([path / "ivr"], queues, skills)
        if queues is not None:
            problems += _survey_services(queues_file, path / "ivr")
    elif not server_file.exists() and not queues_file.exists():
        problems += validate_paths([path], queues, skills)  # a folder of IVR files
    return problems


def _survey_services(queues_file: Path, ivr_dir: Path) -> list[ConfigProblem]:
    """``service_surveys`` entries naming a service that no IVR flow sets: that override would never apply
    (a typo, or a service renamed in the IVR files)."""
    from ivr.flow.validate import build_config
    from ivr.yamlconf import load_yaml_file

    config, _ = build_config([ivr_dir])
    if config is None:
        return []          # the IVR files' own errors are reported
    services = {getattr(node, "service", None) for fd in config.flows.values() for node in fd.flow.nodes.values()}
    data, smap = load_yaml_file(queues_file)
    named = (data or {}).get("service_surveys") or {}
    known = ", ".join(sorted(s for s in services if s)) or "none"
    out = []
    for name in named:
        if name not in services:
            where = ("service_surveys", name)
            line, col = smap.positions.get(where + ("__key__",)) or smap.locate(where)
            out.append(ConfigProblem(smap.file, line, col, f"service_surveys: no IVR flow sets the service {name!r} "
                                     f"(known: {known}); fix the name or remove the entry", "warning"))
    return out


def _surveys(directory: Path) -> tuple[list[ConfigProblem], set[str] | None]:
    """Problems of the survey scripts and their names (None when the folder is absent or broken: the queues'
    survey names are then not checked, the scripts' own errors say what to fix)."""
    from ivr.survey.script import load_survey_scripts

    if not directory.is_dir():
        return [], None
    try:
        return [], set(load_survey_scripts(directory))
    except ConfigError as exc:
        return list(exc.problems), None


def _known(queues_file: Path):
    from routing.config import load_routing_config

    rc = load_routing_config(queues_file)
    return set(rc.queues), set(rc.skills)


def _collect(fn) -> list[ConfigProblem]:
    try:
        fn()
    except ConfigError as exc:
        return list(exc.problems)
    return []
