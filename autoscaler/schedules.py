"""Scheduled capacity: pre-warm before known launches and time-of-day bounds.

Each workload's `policy.schedules` lists entries: a cron expression (5 fields, with a time
zone) or a one-off ISO 8601 start, a duration, an optional pre-warm lead, and the floors it
sets (minimum replicas per pool, minimum warm-pool size, a floor on forecast demand).

An entry is active at time t when some start f satisfies f - prewarm_s <= t < f + duration_s
(so capacity asked for `prewarm_s` early is ready at the nominal start). Overlapping entries
combine by taking the maximum of each floor. Cron is evaluated with APScheduler's
CronTrigger (the scheduler that runs the tick), in the entry's time zone, so daylight-saving
changes follow the zone's rules. The floors reach `policies.decide` as data
(`Observation.floors`); the simulator uses this same class on simulated time by passing
`epoch_s`, the wall-clock time of its t=0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from apscheduler.triggers.cron import CronTrigger

from autoscaler.config import Workload
from policies.spec import ScheduleEntrySpec
from policies.types import Floors

FLOOR_FIELDS = ("min_spot", "min_on_demand", "min_warm", "min_replicas", "min_demand")


def entry_problems(entry: ScheduleEntrySpec) -> list[tuple[str, str]]:
    """(field, message) for an entry's cron, time zone and start; empty when valid."""
    out: list[tuple[str, str]] = []
    if (entry.cron is None) == (entry.start is None):
        out.append(("cron", f"entry {entry.name!r}: set exactly one of cron or start"))
    try:
        tz = ZoneInfo(entry.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        out.append(("timezone", f"entry {entry.name!r}: unknown time zone {entry.timezone!r}"))
        tz = None
    if entry.cron is not None and tz is not None:
        try:
            cron_trigger(entry.cron, tz)
        except ValueError as e:
            out.append(("cron", f"entry {entry.name!r}: invalid cron {entry.cron!r}: {e}"))
    if entry.start is not None:
        try:
            _parse_start(entry.start, tz or UTC)
        except ValueError as e:
            out.append(("start", f"entry {entry.name!r}: invalid start {entry.start!r}: {e}"))
    if not any(getattr(entry, f) for f in FLOOR_FIELDS):
        out.append(("min_replicas", f"entry {entry.name!r} sets no floor"))
    return out


_DOW = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _standard_dow(field: str) -> str:
    """Crontab day-of-week (0 or 7 = Sunday, 1 = Monday) as APScheduler names.

    APScheduler 3 numbers days from Monday = 0, so `from_crontab("0 9 * * 1-5")` would fire
    Tuesday to Saturday. Numeric items are expanded into names; names pass through."""
    if not any(c.isdigit() for c in field.split("/")[0]) and "/" not in field:
        return field
    out: list[str] = []
    for part in field.split(","):
        rng, _, step_s = part.partition("/")
        step = int(step_s) if step_s else 1
        if rng == "*":
            lo, hi = 0, 6
        elif "-" in rng:
            a, b = rng.split("-", 1)
            if not (a.isdigit() and b.isdigit()):
                out.append(part)
                continue
            lo, hi = int(a), int(b)
        elif rng.isdigit():
            lo = hi = int(rng)
            if step_s:
                hi = 6
        else:
            out.append(part)
            continue
        if not (0 <= lo <= 7 and 0 <= hi <= 7 and lo <= hi):
            raise ValueError(f"day of week {part!r} is out of range 0-7")
        out.extend(_DOW[d] for d in range(lo, hi + 1, step))
    return ",".join(dict.fromkeys(out))


def cron_trigger(expr: str, tz: Any) -> CronTrigger:
    """A CronTrigger for a standard 5-field crontab expression."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, dow = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_standard_dow(dow),
        timezone=tz,
    )


def _parse_start(text: str, tz: Any) -> datetime:
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)


@dataclass(frozen=True)
class _Compiled:
    entry: ScheduleEntrySpec
    trigger: CronTrigger | None
    start: datetime | None

    def window_at(self, t: datetime) -> tuple[datetime, datetime] | None:
        """(start, end) of the occurrence active at t (pre-warm included), else None."""
        e = self.entry
        dur = timedelta(seconds=e.duration_s)
        lead = timedelta(seconds=e.prewarm_s)
        if self.start is not None:
            if self.start - lead <= t < self.start + dur:
                return self.start, self.start + dur
            return None
        assert self.trigger is not None
        # first fire strictly after t - duration; active if it begins (minus lead) by t
        probe = t - dur + timedelta(microseconds=1)
        f = self.trigger.get_next_fire_time(None, probe)
        if f is not None and f - lead <= t:
            return f, f + dur
        return None

    def next_after(self, t: datetime) -> datetime | None:
        if self.start is not None:
            return self.start if self.start > t else None
        assert self.trigger is not None
        f: datetime | None = self.trigger.get_next_fire_time(None, t + timedelta(microseconds=1))
        return f


def _compile(entry: ScheduleEntrySpec) -> _Compiled:
    tz = ZoneInfo(entry.timezone)
    if entry.cron is not None:
        return _Compiled(entry, cron_trigger(entry.cron, tz), None)
    assert entry.start is not None
    return _Compiled(entry, None, _parse_start(entry.start, tz))


class ScheduleEvaluator:
    """Implements `autoscaler.protocols.ScheduleSource` for a set of workloads.

    epoch_s: wall-clock UNIX time of the loop clock's zero (0 for a loop on UNIX time; the
    simulator passes the trace's start)."""

    def __init__(self, epoch_s: float = 0.0) -> None:
        self.epoch_s = epoch_s
        self._cache: dict[str, list[_Compiled]] = {}

    def _entries(self, w: Workload) -> list[_Compiled]:
        key = f"{w.key}:{hash(tuple(w.spec.policy.schedules))}"
        got = self._cache.get(key)
        if got is None:
            got = [_compile(e) for e in w.spec.policy.schedules]
            self._cache[key] = got
        return got

    def _dt(self, now_s: float) -> datetime:
        return datetime.fromtimestamp(self.epoch_s + now_s, tz=UTC)

    def floors(self, workloads: Sequence[Workload], now_s: float) -> Floors:
        n = len(workloads)
        fl = Floors.none(n)
        arrays: dict[str, Any] = {f: getattr(fl, f).copy() for f in FLOOR_FIELDS}
        source = fl.source.copy()
        t = self._dt(now_s)
        for i, w in enumerate(workloads):
            if not w.spec.policy.schedules:
                continue
            names = []
            for c in self._entries(w):
                if c.window_at(t) is None:
                    continue
                names.append(c.entry.name)
                for f in FLOOR_FIELDS:
                    v = getattr(c.entry, f)
                    if v is not None:
                        arrays[f][i] = max(arrays[f][i], v)
            source[i] = ",".join(names)
        return Floors(
            min_spot=arrays["min_spot"].astype(np.int64),
            min_on_demand=arrays["min_on_demand"].astype(np.int64),
            min_warm=arrays["min_warm"].astype(np.int64),
            min_replicas=arrays["min_replicas"].astype(np.int64),
            min_demand=arrays["min_demand"].astype(np.float64),
            source=source,
        )

    def describe(self, w: Workload, now_s: float, upcoming: int = 3) -> dict[str, Any]:
        """Active entries and the next starts of each entry (for /v1/workloads)."""
        t = self._dt(now_s)
        active: list[dict[str, Any]] = []
        nxt: list[dict[str, Any]] = []
        for c in self._entries(w):
            e = c.entry
            floors = {f: getattr(e, f) for f in FLOOR_FIELDS if getattr(e, f) is not None}
            win = c.window_at(t)
            if win is not None:
                active.append(
                    {
                        "name": e.name,
                        "start": win[0].isoformat(),
                        "end": win[1].isoformat(),
                        "floors": floors,
                    }
                )
            cursor = t
            for _ in range(upcoming):
                f = c.next_after(cursor)
                if f is None:
                    break
                nxt.append(
                    {
                        "name": e.name,
                        "start": f.isoformat(),
                        "prewarmFrom": (f - timedelta(seconds=e.prewarm_s)).isoformat(),
                        "end": (f + timedelta(seconds=e.duration_s)).isoformat(),
                        "floors": floors,
                    }
                )
                cursor = f
        nxt.sort(key=lambda d: str(d["start"]))
        return {"active": active, "upcoming": nxt[: upcoming * 2]}
