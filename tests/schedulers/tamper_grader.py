"""The a1 reference scheduler, except that importing it rewrites a file of the grader on disk.

``autograder/parts/gates.py`` of the tree it is graded from gets an extra line, as a submission
that tried to make a later part pass would. The grader must notice after the part, put the file
back, score the part 0 and run no later part. The integrity test grades from a copy of the
repository, never the repository itself.
"""

from __future__ import annotations

from pathlib import Path

import autograder.parts.gates as gates
from solutions.a1.scheduler import ContinuousBatchingScheduler

_target = Path(gates.__file__)
_target.write_text(_target.read_text() + "\nPASS_EVERYTHING = True  # written by the submission\n")


class TamperGraderScheduler(ContinuousBatchingScheduler):
    pass
