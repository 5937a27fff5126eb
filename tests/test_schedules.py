"""Scheduled capacity: cron and one-off entries become floors fed to policies.decide."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from autoscaler.config import Workload, parse_workload
from autoscaler.schedules import ScheduleEvaluator
from policies.spec import SpecError


def workload(*entries: dict[str, Any]) -> Workload:
    return parse_workload(
        "inference",
        "chat",
        {
            "targets": {"on_demand": "chat-od", "spot": "chat-spot", "warm": "chat-warm"},
            "policy": {
                "scenario": "chat",
                "capacity": {"rps_per_replica": 13},
                "max_replicas": 50,
                "schedules": list(entries),
            },
        },
    )


def at(text: str, tz: str = "UTC") -> float:
    """UNIX seconds of a local wall-clock time in zone tz."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def floors_at(w: Workload, t: float) -> dict[str, Any]:
    fl = ScheduleEvaluator().floors([w], t)
    return {
        "min_replicas": int(fl.min_replicas[0]),
        "min_warm": int(fl.min_warm[0]),
        "min_on_demand": int(fl.min_on_demand[0]),
        "min_demand": float(fl.min_demand[0]),
        "source": str(fl.source[0]),
    }


NIGHTLY = {"name": "nightly", "cron": "0 23 * * *", "duration_s": 7200, "min_replicas": 6}


@pytest.mark.parametrize(
    ("when", "active"),
    [
        pytest.param("2026-03-10T22:59:59", False, id="before-start"),
        pytest.param("2026-03-10T23:00:00", True, id="at-start"),
        pytest.param("2026-03-11T00:30:00", True, id="after-midnight-same-occurrence"),
        pytest.param("2026-03-11T00:59:59", True, id="last-second"),
        pytest.param("2026-03-11T01:00:00", False, id="ended-after-duration"),
    ],
)
def test_entry_crossing_midnight(when: str, active: bool) -> None:
    got = floors_at(workload(NIGHTLY), at(when))
    assert (got["min_replicas"] == 6) is active
    assert (got["source"] == "nightly") is active


def test_login_wave_follows_daylight_saving_time() -> None:
    # 09:00 Europe/Berlin is 08:00 UTC in winter and 07:00 UTC in summer (DST began
    # 2026-03-29 02:00 local): the floor must follow local time across the change.
    w = workload(
        {
            "name": "login",
            "cron": "0 9 * * 1-5",
            "timezone": "Europe/Berlin",
            "duration_s": 3600,
            "min_replicas": 8,
        }
    )
    friday_before = at("2026-03-27T08:30:00", "UTC")  # 09:30 CET
    monday_after = at("2026-03-30T07:30:00", "UTC")  # 09:30 CEST
    monday_wrong = at("2026-03-30T08:30:00", "UTC")  # 10:30 CEST: over
    assert floors_at(w, friday_before)["min_replicas"] == 8
    assert floors_at(w, monday_after)["min_replicas"] == 8
    assert floors_at(w, monday_wrong)["min_replicas"] == 0


def test_overlapping_entries_take_the_maximum_of_each_floor() -> None:
    w = workload(
        {"name": "a", "cron": "0 12 * * *", "duration_s": 3600, "min_replicas": 4, "min_warm": 1},
        {
            "name": "b",
            "cron": "30 12 * * *",
            "duration_s": 3600,
            "min_replicas": 2,
            "min_warm": 3,
            "min_demand": 40.0,
        },
    )
    got = floors_at(w, at("2026-06-01T12:45:00"))
    assert got["min_replicas"] == max(4, 2)
    assert got["min_warm"] == max(1, 3)
    assert got["min_demand"] == 40.0
    assert got["source"] == "a,b"
    assert floors_at(w, at("2026-06-01T13:15:00"))["min_replicas"] == 2  # only b left


def test_one_off_launch_with_prewarm_lead() -> None:
    launch = {
        "name": "launch",
        "start": "2026-12-01T10:00:00+00:00",
        "duration_s": 1800,
        "prewarm_s": 600,
        "min_on_demand": 5,
    }
    w = workload(launch)
    assert floors_at(w, at("2026-12-01T09:49:59"))["min_on_demand"] == 0
    assert floors_at(w, at("2026-12-01T09:50:00"))["min_on_demand"] == 5  # 600 s early
    assert floors_at(w, at("2026-12-01T10:29:59"))["min_on_demand"] == 5
    assert floors_at(w, at("2026-12-01T10:30:00"))["min_on_demand"] == 0


def test_describe_lists_active_and_upcoming() -> None:
    w = workload(NIGHTLY)
    d = ScheduleEvaluator().describe(w, at("2026-03-10T23:30:00"))
    assert [a["name"] for a in d["active"]] == ["nightly"]
    assert d["upcoming"][0]["start"].startswith("2026-03-11T23:00:00")


def test_simulated_clock_uses_epoch_offset() -> None:
    w = workload(NIGHTLY)
    epoch = at("2026-03-10T22:00:00")
    ev = ScheduleEvaluator(epoch_s=epoch)
    assert int(ev.floors([w], 3599.0).min_replicas[0]) == 0  # 22:59:59
    assert int(ev.floors([w], 3600.0).min_replicas[0]) == 6  # 23:00:00


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        pytest.param(
            {"name": "x", "cron": "0 25 * * *", "duration_s": 60, "min_replicas": 1},
            "policy.schedules[0].cron",
            "invalid cron",
            id="bad-cron-hour",
        ),
        pytest.param(
            {
                "name": "x",
                "cron": "0 9 * * *",
                "timezone": "Europe/Atlantis",
                "duration_s": 60,
                "min_replicas": 1,
            },
            "policy.schedules[0].timezone",
            "unknown time zone",
            id="bad-zone",
        ),
        pytest.param(
            {"name": "x", "duration_s": 60, "min_replicas": 1},
            "policy.schedules[0].cron",
            "exactly one",
            id="neither-cron-nor-start",
        ),
        pytest.param(
            {"name": "x", "start": "next tuesday", "duration_s": 60, "min_replicas": 1},
            "policy.schedules[0].start",
            "invalid start",
            id="bad-start",
        ),
        pytest.param(
            {"name": "x", "cron": "0 9 * * *", "duration_s": 60},
            "policy.schedules[0].min_replicas",
            "sets no floor",
            id="no-floor",
        ),
    ],
)
def test_malformed_entries_are_rejected_naming_the_entry(
    entry: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(SpecError) as ei:
        workload(entry)
    found = dict(ei.value.problems)
    assert f"spec.{field}" in found, ei.value.problems
    assert words in found[f"spec.{field}"] and "'x'" in found[f"spec.{field}"]


def test_epoch_zero_is_unix_time() -> None:
    w = workload(
        {"name": "n", "start": "1970-01-01T00:00:10+00:00", "duration_s": 5, "min_replicas": 3}
    )
    assert int(ScheduleEvaluator().floors([w], 12.0).min_replicas[0]) == 3
    assert datetime.fromtimestamp(0, tz=UTC).year == 1970


@pytest.mark.parametrize(
    ("dow", "expected"),
    [
        pytest.param("1-5", "mon,tue,wed,thu,fri", id="weekdays-as-in-crontab"),
        pytest.param("0", "sun", id="zero-is-sunday"),
        pytest.param("7", "sun", id="seven-is-sunday"),
        pytest.param("*/2", "sun,tue,thu,sat", id="step"),
        pytest.param("sat,sun", "sat,sun", id="names-pass-through"),
        pytest.param("*", "*", id="any"),
    ],
)
def test_crontab_weekdays_follow_cron_numbering(dow: str, expected: str) -> None:
    from autoscaler.schedules import _standard_dow

    assert _standard_dow(dow) == expected
