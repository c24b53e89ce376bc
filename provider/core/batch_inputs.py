"""The inputs of a batch resource (CompileMasterBatch, PoolAdmission): one list of entries,
each an item resource's own inputs keyed by a name, plus the inputs every entry shares.
Both batches check, diff and pick what to converge the same way; only the keys differ.
Their providers share what they do not do themselves: read and delete (BatchProvider).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pulumi import dynamic

from provider.core.errors import at_boundary
from provider.core.inputs import trust_view

Problems = list[tuple[str, str]]


@dataclass(frozen=True)
class EntryList:
    list_key: str  # "masters"
    name_key: str  # "certname": unique within the list
    entry_keys: tuple[str, ...]  # the keys an entry may have
    own_keys: tuple[str, ...]  # the batch's own inputs and outputs: neither shared nor per entry
    local_only_keys: tuple[str, ...]  # shared inputs whose change needs no remote work (deadlines)
    default_name: str  # prefix of the item's progress name when the batch has none
    # keys (per entry or shared) whose change makes the engine replace the item resource:
    # the batch leaves such an entry to that replacement (see to_converge)
    replace_keys: tuple[str, ...] = ()
    # (key, old, new) -> whether that change replaces the item (default: any change of a
    # replace key does); the item's own diff must agree.
    replaces: Callable[[str, Any, Any], bool] | None = None

    def _replaces(self, key: str, old: Any, new: Any) -> bool:
        if old == new:
            return False
        return self.replaces(key, old, new) if self.replaces else True

    def shared(self, props: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in props.items() if k not in (self.list_key, "__provider", *self.own_keys)}

    def entries(self, props: dict[str, Any]) -> list[dict[str, Any]]:
        return list(props.get(self.list_key) or [])

    def item_props(self, props: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
        """One entry's inputs as its item resource has them."""
        name = f"{props.get('resource_name') or self.default_name}/{entry.get(self.name_key)}"
        return {**self.shared(props), **entry, "resource_name": name}

    def problems(
        self, props: dict[str, Any], item_problems: Callable[[dict[str, Any]], Problems], placeholder: dict[str, Any]
    ) -> Problems:
        """Each entry's problems as `<list>[i].<key>`, unknown keys, names listed twice;
        with no entries, the shared inputs checked with `placeholder` standing in for one."""
        entries = props.get(self.list_key)
        if not isinstance(entries, list):
            return [(self.list_key, f"{self.list_key} must be a list of {{{', '.join(self.entry_keys)}}}")]
        out: Problems = []
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            where = f"{self.list_key}[{i}]"
            if not isinstance(entry, dict):
                out.append((where, "must be an object"))
                continue
            extra = set(entry) - set(self.entry_keys)
            if extra:
                out.append((where, f"unknown keys {sorted(extra)}"))
            out += [(f"{where}.{key}", reason) for key, reason in item_problems(self.item_props(props, entry))]
            name = entry.get(self.name_key)
            if isinstance(name, str):
                if name in seen:
                    out.append((f"{where}.{self.name_key}", f"{name} is listed twice"))
                seen.add(name)
        if not entries:  # the shared inputs still deserve a check
            out += item_problems({**self.shared(props), **placeholder})
        return out

    def changed(self, olds: dict[str, Any], news: dict[str, Any]) -> bool:
        """Diff, inputs only: an entry added, removed or changed, or a shared input changed
        (what an SSH connection trusts, not known_hosts text: inputs.trust_view)."""
        olds, news = trust_view(olds), trust_view(news)
        keys = (set(self.shared(olds)) | set(self.shared(news))) - {"resource_name"}
        if any(olds.get(k) != news.get(k) for k in keys):
            return True
        return self._by_name(olds) != self._by_name(news)

    def to_converge(self, olds: dict[str, Any], news: dict[str, Any]) -> list[dict[str, Any]]:
        """New or changed entries; all of them when a shared input that matters changed.
        Never an existing entry whose replace keys changed: its item resource is replaced
        by the engine (delete before replace, dependents such as its pool member first), and
        converging it here, earlier in the same `up`, would change it while its dependents
        still use it - and the replacement's delete would then undo that work."""
        return self.converge_plan(olds, news)[0]

    def converge_plan(self, olds: dict[str, Any], news: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """(entries to converge, names left to their item's replacement). The entries are
        `news`' own, as the item resources get them."""
        given = {e[self.name_key]: e for e in self.entries(news)}
        olds, news = trust_view(olds), trust_view(news)
        keys = set(self.shared(olds)) | set(self.shared(news))
        shared_changed = any(
            olds.get(k) != news.get(k) for k in keys if k not in (*self.local_only_keys, "resource_name")
        )
        replaced = self.replaced(olds, news)
        before = self._by_name(olds)
        todo = [
            given[e[self.name_key]]
            for e in self.entries(news)
            if e[self.name_key] not in replaced and (shared_changed or before.get(e[self.name_key]) != e)
        ]
        return todo, sorted(replaced)

    def replaced(self, olds: dict[str, Any], news: dict[str, Any]) -> set[str]:
        """Names of existing entries whose item resource the engine will replace."""
        olds, news = trust_view(olds), trust_view(news)
        shared = [k for k in self.replace_keys if k not in self.entry_keys]
        if any(self._replaces(k, olds.get(k), news.get(k)) for k in shared):
            return set(self._by_name(olds)) & set(self._by_name(news))
        before = self._by_name(olds)
        return {
            name
            for name, entry in self._by_name(news).items()
            if name in before and any(self._replaces(k, before[name].get(k), entry.get(k)) for k in self.replace_keys)
        }

    def _by_name(self, props: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {e[self.name_key]: e for e in self.entries(props)}


class BatchProvider(dynamic.ResourceProvider):
    """A batch's provider: its diff compares inputs only (ENTRIES.changed, no remote call),
    and it has nothing of its own to read or undo: each entry's item resource (a
    PeCompileMaster, a PoolMember) reports its drift and removes its work."""

    ENTRIES: ClassVar[EntryList]

    @at_boundary
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        """A new or changed entry (or shared input) means converging them."""
        return dynamic.DiffResult(changes=self.ENTRIES.changed(olds, news), replaces=[], delete_before_replace=False)

    @at_boundary
    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        return dynamic.ReadResult(id_, props)

    @at_boundary
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """The item resources' own deletes undo the work."""
