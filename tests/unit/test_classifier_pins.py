"""Pins by rule rewrite (PE before 2016.1) against an in-memory console: masters pinned
together from a batch's threads all stay pinned (PE before 2018.1 has no serial_number to
refuse a lost update: found by the PE 3.7 matrix, two masters at once), and a stale
serial_number (2018.1+) is read again, not an error."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests

from provider.pe.classifier import Classifier, ClassifierAuth, is_pinned, pin_rule

GID = "00000000-0000-4000-8000-00000000000a"


def answer(status: int, body: Any) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = json.dumps(body).encode()
    return resp


class Console(Classifier):
    """PE Master on an in-memory console: each read takes a moment (as over the network),
    and `interfere` times another writer's pin lands between our read and our write."""

    def __init__(self, serial: bool = False, interfere: int = 0):
        super().__init__("https://console.test:4433", "", ClassifierAuth(token="t"))
        self.stored: dict[str, Any] = {"id": GID, "name": "PE Master", "rule": ["or", ["=", "name", "primary"]]}
        if serial:
            self.stored["serial_number"] = 1
        self.interfere = interfere
        self.lock = threading.Lock()

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        if method == "GET":
            with self.lock:
                seen = json.loads(json.dumps(self.stored))
            time.sleep(0.02)
            return answer(200, seen)
        body = kw["json"]
        with self.lock:
            if self.interfere:
                self.interfere -= 1
                self.stored["rule"] = pin_rule(self.stored["rule"], "other.test")
                if "serial_number" in self.stored:
                    self.stored["serial_number"] += 1
            if "serial_number" in self.stored:
                if body.get("serial_number") != self.stored["serial_number"]:
                    return answer(409, {"kind": "conflict", "msg": "stale serial_number"})
                self.stored["serial_number"] += 1
            self.stored["rule"] = body["rule"]
            return answer(200, self.stored)


def test_masters_pinned_together_by_rule_rewrite_all_stay_pinned() -> None:
    console = Console()
    group = console.group(GID)
    names = [f"c{i}.test" for i in range(4)]
    threads = [threading.Thread(target=console.pin, args=(group, name, False)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(is_pinned(console.stored["rule"], name) for name in [*names, "primary"]), console.stored["rule"]


def test_a_stale_serial_number_is_read_again_and_keeps_the_other_writers_pin() -> None:
    console = Console(serial=True, interfere=1)
    console.pin(console.group(GID), "c1.test", False)
    assert is_pinned(console.stored["rule"], "c1.test") and is_pinned(console.stored["rule"], "other.test")
    console.unpin(console.group(GID), "c1.test", False)
    assert not is_pinned(console.stored["rule"], "c1.test") and is_pinned(console.stored["rule"], "other.test")
