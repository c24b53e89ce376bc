"""The by-hand procedure's pg_ident edits (bench/by_hand.py): peadm's three lines per
compiler go in, and come out again without touching another certname's."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.by_hand import pg_ident_add, pg_ident_remove
from provider.pe.generation import PUPPETDB_PG_IDENT_MAPS

SEED = "# PE-PostgreSQL\npe-puppetdb-pe-puppetdb-map puppetdb.pelab.test pe-puppetdb\n"


def test_the_lines_added_are_peadms_and_removed_again_alone(tmp_path: Path) -> None:
    ident = tmp_path / "pg_ident.conf"
    ident.write_text(SEED)
    names = ["compile01.pelab.test", "compile02.pelab.test"]
    subprocess.run(["sh", "-c", pg_ident_add(str(tmp_path), names)], check=True)
    added = ident.read_text().splitlines()[2:]
    assert sorted(added) == sorted(f"{m} {c} {role}" for c in names for m, role in PUPPETDB_PG_IDENT_MAPS)
    subprocess.run(["sh", "-c", pg_ident_remove(str(tmp_path), ["compile01.pelab.test"])], check=True)
    left = ident.read_text()
    assert "compile01.pelab.test" not in left and left.count("compile02.pelab.test") == 3
    assert left.startswith(SEED)
