"""The duplicate window: event ids seen recently, bounded in time and memory."""

from __future__ import annotations

from collections import OrderedDict


class DedupeWindow:
    """Remembers event ids for ``window_s`` seconds of event time, at most ``max_ids``.

    Clients that lose a stream resend it whole and rely on this to count each
    event once.
    """

    def __init__(self, window_s: float, max_ids: int) -> None:
        self.window_s = window_s
        self.max_ids = max_ids
        self._seen: OrderedDict[str, float] = OrderedDict()
        self.evicted_early = 0

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._seen

    def discard(self, event_id: str) -> None:
        """Forget an id (its event was not made durable, so a resend must count)."""
        self._seen.pop(event_id, None)

    def add(self, event_id: str, t: float, now: float) -> None:
        self._seen[event_id] = t
        self._expire(now)

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        seen = self._seen
        while seen:
            first = next(iter(seen.values()))
            if first >= horizon and len(seen) <= self.max_ids:
                break
            if first >= horizon:
                self.evicted_early += 1
            seen.popitem(last=False)
