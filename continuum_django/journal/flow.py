"""Flow control in the claim: concurrency slots per (activity, key), their hand-off, and rate
limits kept in the database, so the limits hold across every worker and machine.

A task with limits (``ActivityTask.flow``) is admitted when it is claimed, under a
transaction-scoped lock on its (activity, key): the attempts in flight are counted (running
with a live lease, or granted a slot and on their way) and the key's `FlowBucket` spaces
starts evenly. Over a limit, the task waits in the journal instead of failing:

* for a concurrency slot (``flow_state="slot"``): no message, no polling. When an attempt
  of the key ends, the journal grants the freed slot to the best waiting task (highest
  priority, then oldest) and sends its message; the sweep does the same for slots freed by
  an expired lease, a cancelled task, or a worker that died before handing its slot on;
* for the rate limit (``flow_state="rate"``): the task reserves the next start the bucket
  allows and is sent as a Celery ETA message for then (the sweep re-sends a lost one).

Tasks without limits take none of these statements.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.db import connections
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import Now

from ..engine.journal import ActivityClaim, Dispatch, Eager, Speculation, Throttled
from ..models import ActivityTask, FlowBucket, FlowState, TaskStatus
from .activities import ActivityJournal, booked_message

# The attempts in flight: running under a live lease, or granted a slot.
BUSY = Q(status=TaskStatus.RUNNING, lease_expires_at__gt=Now()) | Q(
    status=TaskStatus.SCHEDULED, flow_state=FlowState.GRANTED
)
# Tasks that could take a slot now: waiting for one, or due and their message not come yet.
READY = Q(
    status=TaskStatus.SCHEDULED,
    next_attempt_at__lte=Now(),
    flow_state__in=[FlowState.NONE, FlowState.SLOT],
)

# The first key of the two-int advisory locks on a flow key ("flow" in ASCII).
FLOW_LOCK = int.from_bytes(b"flow", "big")


class FlowJournal(ActivityJournal):
    """`ActivityJournal` whose ends of attempts with a concurrency limit hand the freed slot on."""

    def admit(self, task: ActivityTask, now: dt.datetime) -> Throttled | None:
        """Called by the claim of a task with limits, the task locked: None when its attempt
        may start now (its flow state cleared, for the caller to save), or `Throttled` with
        the task saved waiting."""
        self._lock_key(task.activity, task.flow_key)
        limits: dict[str, Any] = task.flow or {}
        concurrency = limits.get("concurrency")
        if concurrency is not None:
            # Tasks ready for a slot that outrank this one go first: those of a higher
            # priority (waiting, or whose message has not come yet: with a backlog in the
            # broker), and those of its priority that waited longer. One query counts both.
            outrank = Q(priority__gt=task.priority) | Q(
                priority=task.priority, pk__lt=task.pk, flow_state=FlowState.SLOT
            )
            others = self._tasks_of(task.activity, task.flow_key).filter(
                status__in=[TaskStatus.RUNNING, TaskStatus.SCHEDULED]
            )
            counts = others.exclude(pk=task.pk).aggregate(
                busy=Count("pk", filter=BUSY),
                ahead=Count("pk", filter=READY & outrank),
            )
            free = concurrency - counts["busy"]
            if free <= 0:
                self._wait(task, FlowState.SLOT)
                return Throttled("concurrency", Dispatch())
            if task.flow_state != FlowState.GRANTED and counts["ahead"]:
                # The free slots go to the best of those ready, this one among them.
                self._wait(task, FlowState.SLOT)
                ready = self._ready(task.activity, task.flow_key)
                return Throttled("concurrency", Dispatch(activities=self._grant(ready, free)))
        rate = limits.get("rate")
        if rate:
            start = self._rate(task, rate, now)
            if start is not None:
                task.next_attempt_at = start
                self._wait(task, FlowState.RATE, ["next_attempt_at"])
                return Throttled("rate", booked_message(task, now))
        task.flow_state = FlowState.NONE
        return None

    def _rate(self, task: ActivityTask, rate: list[float], now: dt.datetime) -> dt.datetime | None:
        """Take a start from the key's bucket: None when the attempt may start now, else the
        time booked for it. A fresh task starts now only when nobody is booked ahead of it;
        a booked one starts at its time unless starts that came late would crowd it (then
        it is booked again): starts stay an interval apart even after a backlog."""
        count, seconds = rate
        interval = dt.timedelta(seconds=seconds / count)
        bucket, _ = FlowBucket.objects.using(self.using).get_or_create(
            activity=task.activity,
            key=task.flow_key,
            defaults={"due_at": now, "booked_to": now},
        )
        booked = task.flow_state == FlowState.RATE
        if now >= bucket.due_at - interval / 2 and (booked or bucket.booked_to <= now):
            bucket.due_at = max(bucket.due_at, now) + interval
            bucket.save(update_fields=["due_at"])
            return None
        start = max(bucket.booked_to, bucket.due_at, now)
        bucket.booked_to = start + interval
        bucket.save(update_fields=["booked_to"])
        return start

    def hand_off(self, activity: str, key: str) -> Dispatch:
        """When tasks wait for a slot of (``activity``, ``key``), grant the free slots to the
        best of the tasks ready for one (waiting, or whose message has not come yet: a
        backlog in the broker is served by priority too); returns their messages."""
        with self._atomic():
            self._lock_key(activity, key)
            # Only when a task waits for a slot: otherwise the ready tasks' own messages
            # claim the free slots, and granting them would only send each a second one.
            first = (
                self._tasks_of(activity, key)
                .filter(status=TaskStatus.SCHEDULED, flow_state=FlowState.SLOT)
                .values_list("flow", flat=True)
                .first()
            )
            if not first or not first.get("concurrency"):
                return Dispatch()
            waiting = self._ready(activity, key)
            free = first["concurrency"] - self._busy(activity, key).count()
            return Dispatch(activities=self._grant(waiting, free))

    def finish_activity(
        self,
        claim: ActivityClaim,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        retry_delay: float | None = None,
        eager: Eager | None = None,
        then: Speculation | None = None,
    ) -> Dispatch:
        dispatch = super().finish_activity(
            claim, result=result, error=error, retry_delay=retry_delay, eager=eager, then=then
        )
        if claim.flow_key is not None:
            dispatch.merge(self.hand_off(claim.activity, claim.flow_key))
        return dispatch

    def time_out_activity(self, claim: ActivityClaim, retry_delay: float | None) -> Dispatch:
        dispatch = super().time_out_activity(claim, retry_delay)
        if claim.flow_key is not None:
            dispatch.merge(self.hand_off(claim.activity, claim.flow_key))
        return dispatch

    def due_activities(self, limit: int, grace_seconds: float) -> Dispatch:
        """Also the backstop of hand-offs: slots freed with nobody to hand them on."""
        dispatch = super().due_activities(limit, grace_seconds)
        keys = (
            ActivityTask.objects.using(self.using)
            .filter(flow_state=FlowState.SLOT)
            .values_list("activity", "flow_key")
            .distinct()[:limit]
        )
        for activity, key in list(keys):
            dispatch.merge(self.hand_off(activity, key))
        return dispatch

    # -- helpers -------------------------------------------------------------

    def _tasks_of(self, activity: str, key: str) -> QuerySet[ActivityTask]:
        return ActivityTask.objects.using(self.using).filter(
            activity=activity, flow_key=key, flow__isnull=False
        )

    def _busy(self, activity: str, key: str) -> QuerySet[ActivityTask]:
        return self._tasks_of(activity, key).filter(BUSY)

    def _ready(self, activity: str, key: str) -> QuerySet[ActivityTask]:
        """Tasks that could take a slot now (`READY`), in grant order."""
        return self._tasks_of(activity, key).filter(READY).order_by("-priority", "id")

    def _grant(
        self, waiting: QuerySet[ActivityTask], free: int
    ) -> list[tuple[int, str, dt.datetime | None]]:
        """Grant up to ``free`` slots to the first of ``waiting``; their messages."""
        if free <= 0:
            return []
        chosen = list(waiting.select_for_update(skip_locked=True).values_list("id", "queue")[:free])
        if chosen:
            ActivityTask.objects.using(self.using).filter(pk__in=[c[0] for c in chosen]).update(
                flow_state=FlowState.GRANTED, next_attempt_at=Now(), updated_at=Now()
            )
        return [(task_id, queue, None) for task_id, queue in chosen]

    def _wait(self, task: ActivityTask, state: str, fields: list[str] | None = None) -> None:
        task.flow_state = state
        ActivityTask.objects.using(self.using).filter(pk=task.pk).update(
            flow_state=state, updated_at=Now(), **{f: getattr(task, f) for f in fields or []}
        )

    def _lock_key(self, activity: str, key: str) -> None:
        """Serialise admissions and hand-offs of one (activity, key) until the transaction
        ends (a Postgres advisory lock; other databases serialise writes already)."""
        connection = connections[self.using]
        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                [FLOW_LOCK, json.dumps([activity, key])],
            )
