"""Domain errors. Each carries a code; every front end maps codes to its own outcome once
(the CLI to an exit code, the API to an HTTP status, the control room to a message), never by
reading the message text. The message says what went wrong and, where possible, how to fix it."""


class MlopsError(Exception):
    """A problem the user can act on. Raise one of the typed subclasses below."""

    code = "ERROR"


class NotFound(MlopsError):
    """The thing named (a run, a version, an alert, a report, a product) does not exist."""

    code = "NOT_FOUND"


class Conflict(MlopsError):
    """The request is valid but the current state refuses it (a gate closed, a lock held, a
    version already champion, an alert already closed)."""

    code = "CONFLICT"


class Invalid(MlopsError):
    """The input itself is wrong (a value out of range, a malformed file, an unknown setting)."""

    code = "INVALID"


class Unavailable(MlopsError):
    """A service the action needs (database, MLflow, a notification channel) cannot be reached:
    worth retrying."""

    code = "UNAVAILABLE"


class Unauthenticated(MlopsError):
    """No identity was given, or the one given is not known (a missing, wrong or revoked token)."""

    code = "UNAUTHENTICATED"


class Forbidden(MlopsError):
    """The identity is known but its role does not allow the action, or the request names
    someone else as the actor."""

    code = "FORBIDDEN"


class SourceError(Invalid):
    """The source files cannot be used as a whole (missing columns, encoding, X/Y mismatch)."""


class NotReady(Conflict):
    """A gate is closed: the upstream step has not succeeded yet."""


class AlreadyRunning(Conflict):
    """Another process holds the pipeline's advisory lock."""


class TransientError(Unavailable):
    """A failure worth retrying (database or MLflow server unreachable)."""


class TimedOut(MlopsError):
    """A step ran past its time limit (STEP_TIMEOUT) and was stopped: its failure is recorded and
    the next scheduled run starts it again (not retried within the run: it would time out again)."""

    code = "TIMEOUT"


CODES = ("ERROR", NotFound.code, Conflict.code, Invalid.code, Unavailable.code, TimedOut.code,
         Unauthenticated.code, Forbidden.code)
