"""The cache's own error: an entry that must not be used."""


class CacheEntryError(Exception):
    """A cache entry that must not be used (damaged, cut short, hostile, unsigned, or not what
    its key says); the step is built instead."""
