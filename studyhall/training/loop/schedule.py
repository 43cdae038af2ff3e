"""When the next iteration starts: a fixed interval (``every = "6h"``) or a cron expression."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_interval(text: str) -> timedelta:
    """'90s', '30m', '6h', '1d', '1h30m' -> timedelta."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.strip().lower())
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhdw])", "", text.strip().lower()).strip():
        raise ValueError(f"bad interval {text!r}: use a number and a unit (s, m, h, d, w), e.g. 6h or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"interval {text!r} must be positive")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Schedule:
    interval: timedelta | None = None
    cron: str | None = None

    @classmethod
    def from_config(cls, every: str | None, cron: str | None) -> Schedule:
        if cron:
            from croniter import croniter

            if not croniter.is_valid(cron):
                raise ValueError(f"bad cron expression {cron!r} (five fields: minute hour day month weekday)")
            return cls(cron=cron)
        if every:
            return cls(interval=parse_interval(every))
        raise ValueError("set `every` (e.g. 6h) or `cron`")

    def next_run(self, after: datetime, last_start: datetime | None = None) -> datetime:
        """The first start time strictly after ``after`` (interval runs count from the last start)."""
        if self.cron:
            from croniter import croniter

            return croniter(self.cron, after).get_next(datetime)
        assert self.interval is not None
        if last_start is None:
            return after
        nxt = last_start + self.interval
        return nxt if nxt > after else after
