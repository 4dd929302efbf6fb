"""What the next checkpoint must write and delete for a bounded table (peers, destinations)."""

from __future__ import annotations


class ChangeTracking:
    """Keys changed since the last checkpoint (``dirty``: their rows are written) and saved keys
    dropped since then (``removed``: their rows are deleted). A key created and dropped between
    two checkpoints was never saved, so it leaves nothing to delete; one dropped and created
    again replaces its saved row."""

    def __init__(self) -> None:
        self.dirty: set[str] = set()
        self.removed: set[str] = set()
        self._unsaved: set[str] = set()  # created since the last checkpoint, not in the store

    def created(self, key: str) -> None:
        if key in self.removed:
            self.removed.discard(key)
        else:
            self._unsaved.add(key)

    def dropped(self, key: str) -> None:
        self.dirty.discard(key)
        if key in self._unsaved:
            self._unsaved.discard(key)
        else:
            self.removed.add(key)

    def saved(self) -> None:
        """The checkpoint has every change: start tracking anew."""
        self.dirty.clear()
        self.removed.clear()
        self._unsaved.clear()
