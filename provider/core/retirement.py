"""Which compile masters leave in this `pulumi up`, so that their removals run as one.

Why: the SDK's provider server runs at most 4 calls at once, and each PeCompileMaster's
delete refreshed the CRL on every master still signed: removing 16 masters one delete at
a time ran 120 peer Puppet runs. The engine deletes in antichains
(pkg/resource/deploy/step_generator.go `ScheduleDeletes`; deployment_executor.go runs
each antichain to completion before the next and drops the deletes of whatever a failed
delete depends on), and a master's PoolMember depends on the master: every member is
deleted - drained and out of the pool - in an antichain before the one that holds the
masters' deletes. So when the first master's delete runs, every other leaving master
whose member's delete succeeded is out of the pool too, and can be removed in the same
call, in threads, with one CRL refresh for all of them (provider/master/removal.py).

What this provider process knows (the engine starts one per operation):
* leaving: masters CompileMasterBatch's update saw leave the stack config (olds - news),
  with their inputs - recorded before any delete, since updates run before deletes;
* drained: masters whose PoolMember delete took them out of the pool in this process
  (forgotten when a member is admitted again or its delete starts);
* removals: each master's removal claimed by some delete call, and how it ended, so the
  master's own delete call waits for it and reports its outcome.
None of it is needed for a correct removal: a master that is not both leaving and drained
is removed by its own delete call alone, as before. Nothing here is persisted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Removal:
    """One master's removal, claimed by the delete call of `leader`."""

    leader: str
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass(frozen=True)
class Claim:
    """What a delete call is to do: remove `group` (its own master first - its inputs are the
    call's own - then the other leaving, drained masters with their inputs), or wait for
    `waiting`, claimed by another call."""

    group: tuple[tuple[str, dict[str, Any]], ...] = ()
    waiting: Removal | None = None


class Retirement:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leaving: dict[str, dict[str, Any]] = {}
        self._drained: set[str] = set()
        self._removals: dict[str, Removal] = {}

    def stack_changed(self, leaving: dict[str, dict[str, Any]], staying: Iterable[str]) -> None:
        """CompileMasterBatch's create or update: `leaving` (certname -> that master's
        PeCompileMaster inputs) left the config, `staying` are in it."""
        with self._lock:
            for certname in staying:
                self._leaving.pop(certname, None)
                self._removals.pop(certname, None)
            for certname, props in leaving.items():
                self._leaving[certname] = props
                self._removals.pop(certname, None)

    def present(self, certname: str) -> None:
        """A master was created or updated: whatever this process knew of its leaving is over."""
        with self._lock:
            self._leaving.pop(certname, None)
            self._drained.discard(certname)
            self._removals.pop(certname, None)

    def draining(self, certname: str) -> None:
        """A pool member's delete starts (or it is admitted): not drained until it succeeds."""
        with self._lock:
            self._drained.discard(certname)

    def drained(self, certname: str) -> None:
        with self._lock:
            self._drained.add(certname)

    def leaving(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._leaving)

    def claim(self, certname: str) -> Claim:
        """The removal of `certname` for its own delete call: waiting on another call's
        group if one claimed it; else a new group of it and every leaving, drained master
        no call has claimed yet."""
        with self._lock:
            taken = self._removals.get(certname)
            if taken is not None and not (taken.done.is_set() and taken.error is not None):
                return Claim(waiting=taken)  # under way, or done: its own call reports it
            group: list[tuple[str, dict[str, Any]]] = [(certname, {})]
            group += [
                (name, other)
                for name, other in sorted(self._leaving.items())
                if name != certname and name in self._drained and name not in self._removals
            ]
            for name, _ in group:
                self._removals[name] = Removal(leader=certname)
            return Claim(group=tuple(group))

    def finish(self, errors: dict[str, BaseException], group: Iterable[str]) -> None:
        """Record how each master of a group ended (`errors` names the failed ones) and wake
        the calls waiting for them. A failed removal is claimed anew by the next call that
        asks for it (that master's next delete: it tries again)."""
        with self._lock:
            for name in group:
                removal = self._removals.get(name)
                if removal is None:
                    continue
                removal.error = errors.get(name)
                if removal.error is None:
                    self._leaving.pop(name, None)
                    self._drained.discard(name)
                removal.done.set()


# The provider process's one registry (the engine runs one provider server per operation).
RETIREMENT = Retirement()
