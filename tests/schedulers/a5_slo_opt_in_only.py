"""The a5 reference scheduler with the SLO opt-in set and no SLO policy: admission stays first come, first served.

Graded on a5's extension (``--parts slo``), it shows what the opt-in alone is worth: a
submission that sets ``slo_aware = True`` without ordering requests by their deadlines meets
about as many targets as a2 and earns none of the extra credit.
"""

from __future__ import annotations

from solutions.a5.scheduler import SpeculativeScheduler


class OptInOnlyScheduler(SpeculativeScheduler):
    slo_aware = True  # the mistake: the opt-in without the policy
