"""The ORM journal: the engine's `Journal` on Django models.

Every write to a run happens in one ``transaction.atomic()`` that locks the run row
(``select_for_update``), checks the writer's lease on the database clock, then writes;
or, for an optimistic claim, begins with one UPDATE of the run row whose WHERE clause
checks that the run is unchanged and unleased (it locks the row as it writes it).
Locks are taken parent run before child run, run before task or timer, never the other
way round.
"""

from __future__ import annotations

from .base import to_event
from .flow import FlowJournal


class OrmJournal(FlowJournal):
    """The journal on the database ``using`` (``CONTINUUM["DATABASE"]``)."""


__all__ = ["OrmJournal", "to_event"]
