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
}


def status(vm_state: str, task_state: str | None) -> str:
    """The API's ``status`` for a vm_state/task_state pair (Nova's state map)."""
    table = _STATUS.get(vm_state, {"default": "UNKNOWN"})
    return table.get(task_state or "", table["default"])


#: Nova's names of power states, for logs and docs (values from the driver interface).
POWER_STATE_NAMES = {0: "NOSTATE", 1: "RUNNING", 3: "PAUSED", 4: "SHUTDOWN", 6: "CRASHED", 7: "SUSPENDED"}
