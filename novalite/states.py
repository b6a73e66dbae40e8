"""Instance states: Nova's vm_state/task_state values and the API ``status`` derived from them.

Pure vocabulary, shared by both sides of the database line (the agent imports it too)."""

from __future__ import annotations

# vm_states
ACTIVE = "active"
BUILDING = "building"
STOPPED = "stopped"
PAUSED = "paused"
SUSPENDED = "suspended"
ERROR = "error"
DELETED = "deleted"
#: Deleted with ``reclaim_instance_interval`` > 0: powered off, still holding its claim and
#: quota, restorable until the conductor's reclaim deletes it (Nova's value).
SOFT_DELETED = "soft-delete"

# task_states
SCHEDULING = "scheduling"
NETWORKING = "networking"
SPAWNING = "spawning"
POWERING_OFF = "powering-off"
POWERING_ON = "powering-on"
REBOOTING = "rebooting"
REBOOTING_HARD = "rebooting_hard"
PAUSING = "pausing"
UNPAUSING = "unpausing"
SUSPENDING = "suspending"
RESUMING = "resuming"
DELETING = "deleting"

#: Task states of power operations: found at agent start, their operation was lost with the agent.
POWER_TASKS = frozenset(
    {POWERING_OFF, POWERING_ON, REBOOTING, REBOOTING_HARD, PAUSING, UNPAUSING, SUSPENDING, RESUMING}
)

_STATUS = {
    ACTIVE: {"default": "ACTIVE", REBOOTING: "REBOOT", REBOOTING_HARD: "HARD_REBOOT"},
    BUILDING: {"default": "BUILD"},
    STOPPED: {"default": "SHUTOFF", REBOOTING_HARD: "HARD_REBOOT"},
    PAUSED: {"default": "PAUSED", REBOOTING_HARD: "HARD_REBOOT"},
    SUSPENDED: {"default": "SUSPENDED", REBOOTING_HARD: "HARD_REBOOT"},
    ERROR: {"default": "ERROR", REBOOTING_HARD: "HARD_REBOOT"},
    DELETED: {"default": "DELETED"},
    SOFT_DELETED: {"default": "SOFT_DELETED"},
}


def status(vm_state: str, task_state: str | None) -> str:
    """The API's ``status`` for a vm_state/task_state pair (Nova's state map)."""
    table = _STATUS.get(vm_state, {"default": "UNKNOWN"})
    return table.get(task_state or "", table["default"])


def is_soft_deleted(deleted: bool, deleted_at: object) -> bool:
    """Whether an instance row is soft-deleted: live, with the time of its soft delete set.

    ``deleted_at`` is the mark (and the time the reclaim counts from), not the vm_state: the
    agent's ``soft_delete_instance`` ends in SOFT_DELETED, but a power-off that failed (its
    fault reported, the vm_state left as it was) or an agent too old to know that method
    must not make the server look undeleted. The conductor's reclaim task puts SOFT_DELETED
    back on such a row, and until then the API shows it from this mark (:func:`shown_vm_state`)."""
    return not deleted and deleted_at is not None


def shown_vm_state(vm_state: str, deleted: bool, deleted_at: object) -> str:
    """The vm_state the API shows: SOFT_DELETED for a soft-deleted instance, else the row's."""
    return SOFT_DELETED if is_soft_deleted(deleted, deleted_at) else vm_state


#: Nova's names of power states, for logs and docs (values from the driver interface).
POWER_STATE_NAMES = {0: "NOSTATE", 1: "RUNNING", 3: "PAUSED", 4: "SHUTDOWN", 6: "CRASHED", 7: "SUSPENDED"}
