"""The one exception type the CLI turns into a clean, one-line error and exit code 1."""


class PipelineError(Exception):
    """A failure the user can act on. The message names the file, field or URL at fault."""


class NotCached(PipelineError):
    """An input an offline run needs is not in the cache: fetching it would fix the run."""
