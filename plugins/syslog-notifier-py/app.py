"""syslog-notifier: each alert event as one RFC 5424 syslog message over TCP (RFC 6587
octet-counted framing) to a log collector or SIEM (rsyslog, syslog-ng, Graylog, Splunk, ...),
through the TCP destination the notifier's `allow_tcp` grants.

Written in Python and built with componentize-py against the same WIT contract as the Rust
plugins (`wit/v1.1`, world `notifier`): the host loads it like any other notifier.

Configuration: `config.server` (`host:port`, required; the same as its `allow_tcp` entry),
`config.facility` (default `local0`), `config.app_name` (default `larder`).
"""

import encodings.idna  # noqa: F401  socket.getaddrinfo encodes host names with it
import socket
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.notification import AlertState, Event
from wit_world.imports import host
from wit_world.imports.types import (
    Error_Denied,
    Error_Invalid,
    Error_Other,
    Error_Unavailable,
    PluginInfo,
    Severity,
)

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

# RFC 5424 severities: 2 critical, 3 error, 4 warning, 5 notice, 6 informational.
SEVERITIES = {
    Severity.CRITICAL: 2,
    Severity.ERROR: 3,
    Severity.WARNING: 4,
    Severity.INFO: 6,
}

STATES = {
    AlertState.FIRING: "firing",
    AlertState.ESCALATED: "escalated",
    AlertState.RESOLVED: "resolved",
    AlertState.TEST: "test",
}

# The SD-ID of Larder's structured data (32473 is the enterprise number RFC 5612 reserves for
# examples; collectors match on the name).
SD_ID = "larder@32473"


def header_field(text, limit):
    """A header field: printable US-ASCII without spaces, at most `limit` long, `-` if empty."""
    cleaned = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def param(value):
    """A structured-data parameter value, with `"`, `\\` and `]` escaped (RFC 5424 6.3.3)."""
    flat = " ".join(str(value).split())
    return flat.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def setting(key, default=None):
    value = host.config(key)
    if value is None or not value.strip():
        if default is None:
            raise Err(Error_Invalid(f"config value `{key}` is required"))
        return default
    return value.strip()


def record(event: Event) -> bytes:
    """The event as one octet-counted RFC 5424 frame."""
    facility_name = setting("facility", "local0")
    facility = FACILITIES.get(facility_name)
    if facility is None:
        raise Err(Error_Invalid(
            f"config value `facility` = {facility_name!r} is not a syslog facility; "
            f"use one of {', '.join(FACILITIES)}"
        ))
    state = STATES[event.state]
    severity = 5 if event.state == AlertState.RESOLVED else SEVERITIES[event.severity]
    details = {d.name: d.value for d in event.details}
    fields = [
        ("id", event.id),
        ("alert", event.alert),
        ("state", state),
        ("level", event.level),
        ("database", event.database),
        ("target", event.target),
        ("backup_id", event.backup_id),
        ("fired_at", event.fired_at),
        ("resolved_at", event.resolved_at),
        ("check", details.get("check")),
    ]
    structured = "[" + SD_ID + "".join(
        f' {name}="{param(value)}"' for name, value in fields if value is not None
    ) + "]"
    text = (
        f"[{state.upper()}] {event.alert} on {event.database} (level {event.level}): "
        f"{' '.join(event.message.split())} -- action: {' '.join(event.action.split())}"
    )
    line = " ".join([
        f"<{facility * 8 + severity}>1",
        header_field(event.sent_at, 48),
        header_field(details.get("host", ""), 255),
        header_field(setting("app_name", "larder"), 48),
        "-",
        header_field(state, 32),
        structured,
        text,
    ]).encode("utf-8")
    return str(len(line)).encode("ascii") + b" " + line


def destination():
    server = setting("server")
    name, _, port = server.rpartition(":")
    if not name or not port.isdigit():
        raise Err(Error_Invalid(
            f"config value `server` = {server!r} must be host:port, e.g. logs.internal:6514"
        ))
    return name.strip("[]"), int(port)


class Notification(exports.Notification):
    def describe(self) -> PluginInfo:
        return PluginInfo(
            name="syslog-notifier",
            version="0.1.0",
            capabilities=["tcp", "rfc5424", "python"],
        )

    def notify(self, event: Event) -> None:
        try:
            send(event)
        except Err:
            raise
        except Exception as e:
            # A bug here would otherwise trap: say what it was instead.
            raise Err(Error_Other(f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def send(event: Event) -> None:
    frame = record(event)
    name, port = destination()
    try:
        with socket.create_connection((name, port)) as connection:
            connection.sendall(frame)
    except PermissionError as e:
        raise Err(Error_Denied(
            f"the host refused a connection to {name}:{port} ({e}): is it in this notifier's allow_tcp?"
        ))
    except OSError as e:
        raise Err(Error_Unavailable(f"cannot send to the syslog server {name}:{port}: {e}"))
    host.log(host.Level.INFO, f"{event.alert} ({STATES[event.state]}) sent to {name}:{port}")
