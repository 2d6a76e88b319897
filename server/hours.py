"""Opening hours: a weekly schedule in the button's time zone.

``{"mon": [["09:00", "12:30"], ["13:30", "17:00"]], "sat": [["10:00", "14:00"]]}``: a day absent is
closed all day; ``None`` means always open. Ranges are [start, end) in local wall-clock time, so
daylight-saving changes need no special handling.
"""

from __future__ import annotations

import datetime
import functools
import re
import zoneinfo
from typing import Any

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


class HoursError(ValueError):
    """The schedule or time zone is malformed; the message says where."""


def check(hours: Any, time_zone: str) -> None:
    """Raise :class:`HoursError` unless ``hours`` is a valid schedule and ``time_zone`` a known zone."""
    if time_zone not in _zones():
        raise HoursError(f"unknown time zone {time_zone!r}; use an IANA name such as Europe/Paris")
    if hours is None:
        return
    if not isinstance(hours, dict):
        raise HoursError("opening hours must be an object of days")
    for day, ranges in hours.items():
        if day not in DAYS:
            raise HoursError(f"unknown day {day!r}; days are {', '.join(DAYS)}")
        if not isinstance(ranges, list) or len(ranges) > 8:
            raise HoursError(f"{day}: a list of at most 8 [start, end] ranges")
        for item in ranges:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(isinstance(t, str) and _TIME.match(t) for t in item)
            ):
                raise HoursError(f"{day}: each range is a list of two HH:MM times")
            if _minutes(item[0]) >= _minutes(item[1]):
                raise HoursError(f"{day}: {item[0]} is not before {item[1]}")


def is_open(hours: dict[str, list[list[str]]] | None, time_zone: str, now: datetime.datetime) -> bool:
    """Whether the schedule is open at ``now`` (an aware datetime)."""
    if hours is None:
        return True
    try:
        zone = zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo("UTC")  # a zone this host lacks (checked when stored): UTC, not an outage
    local = now.astimezone(zone)
    minute = local.hour * 60 + local.minute
    return any(_minutes(start) <= minute < _minutes(end) for start, end in hours.get(DAYS[local.weekday()], []))


@functools.cache
def _zones() -> frozenset[str]:
    """The IANA zone names (not the files a host may also have, such as ``localtime``)."""
    names = zoneinfo.available_timezones() - {"localtime", "Factory", "posixrules"}
    return frozenset({name for name in names if not name.startswith(("posix/", "right/"))} | {"UTC"})


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)
