"""`[security]`: signatures, who may publish what, and masking; the checks the engine runs.

```toml
[security]
require_signatures = true      # events and actions without a valid signature are refused
max_age = "5m"                 # a signature this old when its record reached Kafka is stale
max_clock_skew = "30s"         # ... and one this far after it too
keys_file = "keys.toml"        # relative to this file; CHOREO_SIGNING_KEYS_FILE overrides
mask = ["payload.payment.card_number"]

[security.publishers]          # source glob -> event-type globs it may publish
"shop.*" = ["order_received", "checkout_started"]
"agent.*" = ["*"]
```

Everything is off when the table is absent. The checks are synchronous and cheap (one
HMAC-SHA256 over the canonical form, a cached glob lookup), for the hot path.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from choreo.durations import positive_duration
from choreo.envelope import ACTION_REQUESTED, ENGINE_SOURCE, Event, InvalidEvent, parse_event
from choreo.errors import ConfigError, ConfigIssue
from choreo.masking import PATH, Masker
from choreo.signing import (
    UNAUTHORIZED,
    Keyring,
    KeyringError,
    Refusal,
    load_keyring,
    may_sign,
    sign,
    verify,
)
from choreo.workflows.machine import ACTION_CANCEL

Fail = Callable[[str, str, str], None]  # (pattern id, field, reason)
FIELDS = ("require_signatures", "max_age", "max_clock_skew", "keys_file", "mask", "publishers")
AUTH_CACHE = 4096


@dataclass(frozen=True)
class SecuritySettings:
    require_signatures: bool = False
    max_age: float = 300.0
    max_clock_skew: float = 30.0
    keys_file: Path | None = None
    mask: tuple[str, ...] = ()
    # (source glob, event-type globs); empty: every source may publish every type.
    publishers: tuple[tuple[str, tuple[str, ...]], ...] = ()


def parse_security(raw: object, base_dir: Path, dedup_horizon: float,
                   fail: Fail) -> SecuritySettings:
    """Read `[security]`; every problem is reported through `fail` with its field."""
    if raw is None:
        return SecuritySettings()
    if not isinstance(raw, dict):
        fail("-", "security", "must be a table")
        return SecuritySettings()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"security.{key}"
        if key == "require_signatures":
            if not isinstance(value, bool):
                fail("-", name, "must be true or false")
            else:
                out[key] = value
        elif key in ("max_age", "max_clock_skew"):
            seconds = positive_duration(value, name, fail)
            if seconds is not None:
                out[key] = seconds
        elif key == "keys_file":
            if not isinstance(value, str) or not value:
                fail("-", name, "must be the path of a key file (never the keys themselves)")
            else:
                out[key] = base_dir / value
        elif key == "mask":
            if not isinstance(value, list):
                fail("-", name, "must be a list of paths such as 'payload.card_number'")
                continue
            paths = []
            for index, path in enumerate(value):
                if not isinstance(path, str) or not PATH.match(path):
                    fail("-", f"{name}[{index}]", f"{path!r} is not a path such as "
                         "'payload.card_number' or 'metadata.email' (segments: letters, "
                         "digits, _ and -, or *)")
                else:
                    paths.append(path)
            out[key] = tuple(paths)
        elif key == "publishers":
            out[key] = _publishers(value, name, fail)
        else:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else (
                f"; expected one of {', '.join(FIELDS)}")
            fail("-", name, f"unknown security field{hint}")
    settings = SecuritySettings(**out)
    if settings.max_age > dedup_horizon:
        # A replay within the horizon is dropped as a duplicate, one older than max_age is
        # stale; a max_age past the horizon would leave a gap where a replay is neither.
        fail("-", "security.max_age", f"must not exceed defaults.dedup_horizon "
             f"({dedup_horizon:g}s), or a replay could be neither stale nor a duplicate")
    return settings


def _publishers(value: object, name: str, fail: Fail) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        fail("-", name, "must be a table of source glob -> list of event-type globs")
        return ()
    out = []
    for source, types in value.items():
        if not source:
            fail("-", name, "a source glob must not be empty")
            continue
        if (not isinstance(types, list)
                or not all(isinstance(t, str) and t for t in types)):
            fail("-", f"{name}.{source}", "must be a list of event types or globs")
            continue
        out.append((source, tuple(types)))
    return tuple(out)


class Guard:
    """The security checks and signing of one process, built once from settings and keys."""

    def __init__(self, settings: SecuritySettings | None = None,
                 keyring: Keyring | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or SecuritySettings()
        self.keyring = keyring or Keyring()
        self.clock = clock
        self.require = self.settings.require_signatures
        self.publishers = self.settings.publishers
        # Whether ingest has anything to check: the hot path tests this one attribute.
        self.active = self.require or bool(self.publishers)
        self.signs = self.keyring.signing is not None
        self.masker = Masker(self.settings.mask)
        self._allowed: dict[tuple[str, str], bool] = {}

    def authorized(self, source: str, event_type: str) -> bool:
        """Whether `[security.publishers]` lets `source` publish `event_type`."""
        if not self.publishers:
            return True
        found = self._allowed.get((source, event_type))
        if found is None:
            found = any(fnmatchcase(source, s) and any(fnmatchcase(event_type, t) for t in ts)
                        for s, ts in self.publishers)
            if len(self._allowed) >= AUTH_CACHE:
                self._allowed.clear()
            self._allowed[(source, event_type)] = found
        return found

    def authenticate(self, topic: str, key: bytes | None, value: bytes | None, headers: Any,
                     received_at: float | None) -> Refusal | None:
        """The signature over the raw record, when signatures are required: run before the
        value is parsed, so a forgery is refused as such whatever else is wrong with it."""
        if not self.require:
            return None
        return verify(self.keyring, topic, key, value, headers,
                      received_at if received_at else self.clock(),
                      self.settings.max_age, self.settings.max_clock_skew)

    def permit(self, event: Event, headers: Any) -> Refusal | None:
        """After `authenticate` and parsing: the signing key may sign for the event's source,
        and `[security.publishers]` lets that source publish its type."""
        if self.require:
            refusal = may_sign(self.keyring, headers, event.source)
            if refusal is not None:
                return refusal
        if not self.authorized(event.source, event.event_type):
            return Refusal(UNAUTHORIZED, f"source {event.source[:100]!r} may not publish "
                                         f"{event.event_type!r} ([security.publishers])")
        return None

    def check(self, event: Event, headers: Any, received_at: float | None, *, topic: str,
              key: bytes | None, value: bytes | None) -> Refusal | None:
        """Ingest, all at once: the signature (if required), then the publishers table."""
        return (self.authenticate(topic, key, value, headers, received_at)
                or self.permit(event, headers))

    def permit_action(self, action: Event, headers: Any,
                      event_types: tuple[str, ...] = (ACTION_REQUESTED,)) -> Refusal | None:
        """A worker, after `authenticate`: when signatures are required, only the engine's
        actions pass (and, with `event_types`, its action cancels)."""
        if not self.require:
            return None
        refusal = may_sign(self.keyring, headers, action.source)
        if refusal is None and (action.source != ENGINE_SOURCE
                                or action.event_type not in event_types):
            refusal = Refusal(UNAUTHORIZED, f"actions come from {ENGINE_SOURCE!r}, this one "
                                            f"from {action.source[:100]!r}")
        return refusal

    def vouch(self, topic: str, key: bytes | None, value: bytes | None, headers: Any, *,
              actions: bool) -> Refusal | None:
        """Whether a dead-lettered record may go back to `topic` signed afresh (`choreo
        redrive`): its original signature must verify for that topic, key and value (at any
        age), its key may sign for its source, and it must be what the receiver accepts
        from that source (an engine action for a capability topic, an authorized event
        otherwise). Without required signatures nothing is verified downstream either."""
        if not self.require:
            return None
        refusal = verify(self.keyring, topic, key, value, headers, None,
                         self.settings.max_age, self.settings.max_clock_skew)
        if refusal is not None:
            return refusal
        try:  # no size limit: one may have been raised since
            event = parse_event(value, len(value or b""))
        except InvalidEvent as exc:
            return Refusal(exc.reason, f"not an envelope, it would be refused again: "
                                       f"{exc.detail}")
        if actions:
            return self.permit_action(action=event, headers=headers,
                                      event_types=(ACTION_REQUESTED, ACTION_CANCEL))
        return self.permit(event, headers)

    def sign(self, topic: str, key: bytes | None, value: bytes | None
             ) -> list[tuple[str, bytes]] | None:
        """Signature headers for a record this process publishes, if it has a signing key."""
        if not self.signs:
            return None
        return sign(self.keyring, topic, key, value, self.clock())


def build_guard(settings: Any, security: SecuritySettings, *, need_signing: bool = True
                ) -> Guard:
    """The keyring from the key file (CHOREO_SIGNING_KEYS_FILE, else `keys_file`) and
    CHOREO_SIGNING_KEYS; raise ConfigError when it cannot serve `security`."""
    path = settings.signing_keys_file or security.keys_file
    where = "CHOREO_SIGNING_KEYS_FILE" if settings.signing_keys_file else "security.keys_file"
    try:
        keyring = load_keyring([path] if path else [], settings.signing_keys,
                               settings.signing_key_id)
    except KeyringError as exc:
        raise ConfigError([ConfigIssue("-", where, str(exc))]) from None
    if security.require_signatures:
        problem = None
        if not keyring:
            problem = ("no keys: name a key file (keys_file or CHOREO_SIGNING_KEYS_FILE) or "
                       "set CHOREO_SIGNING_KEYS")
        elif need_signing and not keyring.signing:
            problem = ("the engine and the workers sign what they publish: name the key to "
                       "sign with (sign_with in the key file, or CHOREO_SIGNING_KEY_ID)")
        if problem:
            raise ConfigError([ConfigIssue("-", "security.require_signatures", problem)])
    return Guard(security, keyring)

