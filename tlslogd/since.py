"""Times given as ``since``/``until``: the API's ``since=`` and the commands' ``--since`` and
``--until``. A module of its own, so that the offline commands need not load the web app."""

from __future__ import annotations

import datetime as dt
import math
import re

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BadRequest(Exception):
    pass


def parse_since(value: str, now: float, name: str = "since") -> float:
    """``24h``/``7d``/``30m`` ago, epoch seconds, or an ISO 8601 time; ``name`` is what the
    user gave it as, for the error."""
    m = _DURATION.match(value)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        epoch = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(epoch):  # not nan or inf, which JSON cannot carry back
            return epoch
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadRequest(
            f"{name}={value!r}: expected a duration (30m, 24h, 7d), epoch seconds or ISO 8601"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()
    return parsed.timestamp()
