"""Link stores for tests that measure something other than the store."""

from __future__ import annotations

from bbvisma.linkstore import Link, LinkStore


class NullLinkStore(LinkStore):
    """Forgets everything and keeps the ABC's default ``guard()``.

    For tests that measure the engine, not a growing store (memory), and for the default guard.
    """

    def get(self, entity, source_key):
        return None

    def get_many(self, entity, source_keys):
        return {}

    def put(self, entity, source_key, target_key, content_hash, meta=None, *, durable=True):
        return Link(entity, source_key, target_key, content_hash)

    def find_by_target(self, entity, target_key):
        return None
