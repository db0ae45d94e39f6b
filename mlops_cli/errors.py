"""Domain errors. The CLI turns them into click.ClickException with the same message."""


class MlopsError(Exception):
    """A problem the user can act on; the message says what and, where possible, how."""


class SourceError(MlopsError):
    """The source files cannot be used as a whole (missing columns, encoding, X/Y mismatch)."""


class NotReady(MlopsError):
    """A gate is closed: the upstream step has not succeeded yet."""


class AlreadyRunning(MlopsError):
    """Another process holds the pipeline's advisory lock."""


class TransientError(MlopsError):
    """A failure worth retrying (database or MLflow server unreachable)."""
