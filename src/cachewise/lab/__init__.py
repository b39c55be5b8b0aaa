"""The lab: the workshop's six case studies (and connection pooling) run and measured.

``cachewise lab`` runs every candidate strategy of each case on the same seeded
workload against a real database, measures it, and computes a recommendation from
the measurements and the case's stated objective.
"""

from __future__ import annotations
