"""The policy set in force, and its all-or-nothing reload.

``PolicyStore`` owns the reference to the current ``PolicySet``. A reload loads and
validates a complete new set first and swaps it in with one assignment, so readers see
either the old set or the new one, never a mix; a set that does not validate is dropped
and the last good one stays in force (a broken edit must not open the gateway, nor close
it). Readers take ``store.current`` once per message and use that snapshot throughout.

The store is built by the application and passed to whoever needs it: no module-level
instance, no I/O at import.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import PolicyError, Problem
from gateway.policy.loader import load_policy_set
from gateway.policy.model import PolicySet

__all__ = ["PolicyStore", "ReloadResult"]

log = logging.getLogger("gateway.policy")

Loader = Callable[[Path], PolicySet]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did.

    ``ok`` is true when the new set was applied; otherwise ``problems`` says why and
    ``policy_set`` is the set still in force (the previous one).
    """

    ok: bool
    policy_set: PolicySet
    problems: tuple[Problem, ...] = ()


class PolicyStore:
    """Holds the current ``PolicySet`` and replaces it only with a set that validates.

    ``on_reload`` (e.g. a metrics counter) is called with ``"ok"`` or ``"failed"`` after
    each reload attempt. ``loader`` exists for tests; it defaults to ``load_policy_set``.
    """

    def __init__(
        self,
        directory: Path,
        initial: PolicySet | None = None,
        *,
        on_reload: Callable[[str], None] | None = None,
        loader: Loader = load_policy_set,
    ) -> None:
        """Hold ``initial``, or load ``directory`` now when it is ``None``.

        Loading here raises ``PolicyError`` if the set does not validate: at start-up
        there is no last good set to fall back on, so the process must not start.
        """
        self._directory = directory
        self._current = loader(directory) if initial is None else initial
        self._on_reload = on_reload
        self._loader = loader
        # Serializes reloads (SIGHUP and the admin API may race); readers never take it.
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        """The policies directory that reloads read."""
        return self._directory

    @property
    def current(self) -> PolicySet:
        """The set in force now; take it once and use that snapshot for a whole message."""
        return self._current

    def reload(self) -> ReloadResult:
        """Load the directory again and apply the new set only if it validates.

        Never raises ``PolicyError``: the problems are logged and returned, and the old
        set stays in force. Blocking file I/O: run it in a thread from the event loop.
        """
        with self._lock:
            try:
                new = self._loader(self._directory)
            except PolicyError as exc:
                result = ReloadResult(False, self._current, exc.problems)
            except Exception:
                # A bug in loading must not take the gateway down or half-apply a set.
                log.exception(
                    "policy reload from %s crashed; keeping the current set", self._directory
                )
                self._notify("failed")
                raise
            else:
                self._current = new
                result = ReloadResult(True, new)
        if result.ok:
            log.info(
                "policy set reloaded from %s: %d dealers",
                self._directory,
                len(result.policy_set.dealers),
            )
        else:
            log.error(
                "policy reload from %s failed; keeping the current set (%d problems):\n%s",
                self._directory,
                len(result.problems),
                "\n".join(str(p) for p in result.problems),
            )
        self._notify("ok" if result.ok else "failed")
        return result

    def _notify(self, outcome: str) -> None:
        if self._on_reload is None:
            return
        try:
            self._on_reload(outcome)
        except Exception:
            # The reload outcome stands whatever the hook does; report its bug and go on.
            log.exception("policy reload hook failed")
