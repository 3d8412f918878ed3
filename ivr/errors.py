"""Root of the exceptions raised by the ivr package: catch ``IvrError`` to catch them all."""


class IvrError(Exception):
    """Base class; the message says what the user should do."""


class ConfigError(IvrError):
    """A configuration file is invalid. ``problems`` lists (file, line, column, message)."""

    def __init__(self, problems: list["ConfigProblem"]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    line: int
    column: int
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"
