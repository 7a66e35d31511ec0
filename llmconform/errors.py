"""Error types that separate the user's mistakes (exit code 2, nothing started) from engine failures."""


class UserError(Exception):
    """A mistake in the user's input: reported before anything starts, exit code 2."""

    exit_code = 2


class LayoutError(UserError):
    """A parallelism layout that cannot run; `rule` names the rule it breaks."""

    def __init__(self, rule: str, message: str):
        super().__init__(f"{message} [rule: {rule}]")
        self.rule = rule
        self.detail = message


class MatrixError(UserError):
    """A bad matrix file: names the file, the key path, the bad value and what is allowed."""

    def __init__(self, file: str, path: str, problem: str, allowed: str | None = None):
        where = f"{file}: {path}" if path else file
        text = f"{where}: {problem}"
        if allowed:
            text += f" (allowed: {allowed})"
        super().__init__(text)
        self.file, self.path, self.problem, self.allowed = file, path, problem, allowed
