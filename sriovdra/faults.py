"""Named fault points for crash tests: a process started with SRIOVDRA_TEST_FAULTS=<point>[,<point>...]
kills itself with SIGKILL when it reaches one of them. Unset (always, outside tests), a point
costs one set lookup.

Every point is listed in POINTS with why it is there: tests/faults kills `serve` at each one and
checks that a restart converges, and a test checks that POINTS and the faults.point("...") calls
in the code name the same points (a new point cannot be left out of the harness).
"""

from __future__ import annotations

import os
import signal

ENV = "SRIOVDRA_TEST_FAULTS"

# (name, what the checkpoint and the host hold when the process dies there). Names are <area>.<where>.
POINTS: tuple[tuple[str, str], ...] = (
    ("prepare.after-intent", "claim checkpointed as preparing, host untouched: restart rolls it back"),
    ("prepare.after-bind", "VF rebound to vfio-pci, no CDI spec yet: rollback must restore the driver"),
    ("prepare.after-cdi", "CDI spec written, checkpoint still says preparing: rollback must remove the spec"),
    ("prepare.after-commit", "checkpointed as prepared, reply lost: the kubelet's retry must get the same devices"),
    ("unprepare.after-intent", "checkpointed as unpreparing, host untouched: restart finishes the unprepare"),
    ("unprepare.after-undo", "host undone and spec removed, record still unpreparing: finishing must be idempotent"),
    ("attach.after-intent", "attachment checkpointed as attaching, netdev untouched: Synchronize redoes it"),
    ("attach.after-move-to-pod", "netdev in the pod under our temporary name, not renamed: detach finds it by it"),
    ("attach.after-move", "netdev in the pod, renamed, MTU/MAC set; checkpoint still attaching"),
    ("detach.after-move-home", "netdev back home with its name/MTU/MAC, checkpoint still says in the pod"),
    ("provision.after-zero", "sriov_numvfs written 0, new count not yet: the next start provisions again"),
    ("provision.after-numvfs", "new VF count written, VFs not yet checked ready: the next start finds it done"),
    ("slices.after-delete", "an obsolete slice deleted, the rest of the sync not done: the next sync repairs"),
    ("slices.after-update", "a changed slice updated, the rest of the pool not yet: generations disagree"),
    ("slices.after-create", "one missing slice created, others not yet: the pool is incomplete"),
)
NAMES = frozenset(name for name, _ in POINTS)

_ARMED = frozenset(filter(None, os.environ.get(ENV, "").split(",")))


def point(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
