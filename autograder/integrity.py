"""The grader's own code must be the same after a part as before it.

A part runs the submission with the grader's permissions: its code could rewrite
``autograder/parts/*.py`` or ``engine_core/*.py`` on disk, and a later part (or the student's
next grade) would then run the rewritten code. The grader keeps the bytes of every source file
of both packages from before the first part; after each part it compares, and on a change it
puts the files back and voids the rest of the grade, naming them (``grade.py``).
"""

from __future__ import annotations

from pathlib import Path

from .spec import ROOT

TRUSTED_PACKAGES = ("autograder", "engine_core")


class Snapshot:
    """The ``.py`` files of the trusted packages under ``root``, as they were when taken."""

    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.files = self._read()

    def changed(self) -> list[str]:
        """Files added, removed or rewritten since the snapshot, relative to its root."""
        now = self._read()
        return sorted(name for name in self.files.keys() | now.keys() if self.files.get(name) != now.get(name))

    def restore(self, names: list[str]) -> None:
        """Put ``names`` back as they were: rewritten and removed files rewritten, added ones deleted."""
        for name in names:
            path = self.root / name
            if name in self.files:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.files[name])
            else:
                path.unlink(missing_ok=True)

    def _read(self) -> dict[str, bytes]:
        files = (p for package in TRUSTED_PACKAGES for p in (self.root / package).rglob("*.py"))
        return {str(p.relative_to(self.root)): p.read_bytes() for p in files}
