"""Due timers fired a batch at a time on Postgres: one statement for a whole batch of runs.

Firing run by run (lock the run, its timers, mark them, append ``timer_fired``, update the
run) costs five statements and a commit per run, so a burst of timers due at once waited
minutes. Here one statement does it for up to ``limit`` runs, with the per-run path's
effects exactly:

* the runs are locked ``FOR UPDATE SKIP LOCKED`` (a run being claimed or written is left
  to its writer, whose claim fires its due timers, or to the next sweep);
* an ended run's due timers are marked fired and nothing is appended to it;
* a live run past its deadline is left alone: the sweep's `time_out_runs` ends it and
  cancels its timers;
* each live run's due timers (in the order they were armed) get ``timer_fired`` events
  numbered from its ``last_seq`` on, and the run row takes the new ``last_seq``, one more
  ``revision``, a wake-up no later than now, and ``updated_at``, all on the statement's
  clock (``Now()`` on Postgres), as `OrmBase._append` and `OrmBase._wake` do.

Rows locked under the statement are read as their latest committed versions (Read
Committed re-checks each row it locks or updates), so a timer fired or cancelled by a
concurrent writer that committed meanwhile is not fired again, and seqs continue from the
run's true ``last_seq``; the (run, seq) constraint backs both.
"""

from __future__ import annotations

from functools import cache

from django.db import connections

from ..engine.events import EventType
from ..engine.journal import Dispatch
from ..models import TERMINAL, Timer, WorkflowEvent, WorkflowRun
from . import internals


def fire_batch(using: str, limit: int) -> Dispatch:
    """Fire the ``limit`` longest-due timers, and any other due timer of their runs, in one
    statement; the returned dispatch holds an advance for every run that got
    ``timer_fired`` events (send it after commit)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(_sql(connection.alias), [limit, str(EventType.TIMER_FIRED)])
        woken = [str(run_id) for (run_id,) in cursor.fetchall()]
    return Dispatch(runs=[(run_id, None) for run_id in woken])


@cache
def _sql(alias: str) -> str:
    quote = internals.quoter(connections[alias])
    timers = quote(Timer._meta.db_table)
    events = quote(WorkflowEvent._meta.db_table)
    runs = quote(WorkflowRun._meta.db_table)
    ended = ", ".join(f"'{status}'" for status in TERMINAL)
    now = "STATEMENT_TIMESTAMP()"
    due = f"NOT t.fired AND NOT t.cancelled AND t.fire_at <= {now}"
    return (
        # Oldest first, by the partial index of open timers (a DISTINCT would walk the
        # run_id index over every timer ever armed to find them).
        f"WITH due AS (SELECT t.run_id FROM {timers} t WHERE {due} ORDER BY t.fire_at LIMIT %s),"
        f" locked AS (SELECT r.id, r.last_seq, r.status IN ({ended}) AS ended"
        f" FROM {runs} r WHERE r.id IN (SELECT run_id FROM due)"
        f" AND (r.status IN ({ended}) OR r.deadline IS NULL OR r.deadline > {now})"
        " FOR UPDATE OF r SKIP LOCKED),"
        f" firing AS (UPDATE {timers} t SET fired = TRUE FROM locked l"
        f" WHERE t.run_id = l.id AND {due}"
        " RETURNING t.id, t.run_id, t.command_id, l.last_seq, l.ended),"
        " numbered AS (SELECT run_id, command_id,"
        " last_seq + row_number() OVER (PARTITION BY run_id ORDER BY id) AS seq"
        " FROM firing WHERE NOT ended),"
        f" appended AS (INSERT INTO {events} (run_id, seq, type, command_id, payload, created_at)"
        f" SELECT run_id, seq, %s, command_id, NULL, {now} FROM numbered),"
        " woken AS (SELECT run_id, max(seq) AS last_seq FROM numbered GROUP BY run_id)"
        f" UPDATE {runs} r SET last_seq = w.last_seq, revision = r.revision + 1,"
        f" next_wakeup_at = LEAST(COALESCE(r.next_wakeup_at, {now}), {now}),"
        f" updated_at = {now}"
        " FROM woken w WHERE r.id = w.run_id RETURNING r.id"
    )
