"""The cache's own error: an entry that must not be used."""


class CacheEntryError(Exception):
    """A cache entry that must not be used (damaged, cut short, hostile, unsigned, or not what
    its key says); the step is built instead."""


class CannotPlace(Exception):
    """A verified entry that could not be moved into place (a local problem, e.g. an immutable
    directory); what was moved has been put back as it was."""
