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
#: Shelved (issue 11): snapshotted, guest kept on its host / offloaded (no host, no claim).
SHELVED = "shelved"
SHELVED_OFFLOADED = "shelved_offloaded"

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
# snapshot, backup, rebuild (issue 11)
IMAGE_SNAPSHOT_PENDING = "image_snapshot_pending"
IMAGE_SNAPSHOT = "image_snapshot"
IMAGE_BACKUP = "image_backup"
IMAGE_PENDING_UPLOAD = "image_pending_upload"
IMAGE_UPLOADING = "image_uploading"
REBUILDING = "rebuilding"
REBUILD_SPAWNING = "rebuild_spawning"
SHELVING = "shelving"
SHELVING_IMAGE_PENDING_UPLOAD = "shelving_image_pending_upload"
SHELVING_IMAGE_UPLOADING = "shelving_image_uploading"
SHELVING_OFFLOADING = "shelving_offloading"
UNSHELVING = "unshelving"

#: Task states of a snapshot or backup under way (the server keeps its vm_state meanwhile).
IMAGE_TASKS = frozenset(
    {
        IMAGE_SNAPSHOT_PENDING,
        IMAGE_SNAPSHOT,
        IMAGE_BACKUP,
        IMAGE_PENDING_UPLOAD,
        IMAGE_UPLOADING,
        SHELVING,
        SHELVING_IMAGE_PENDING_UPLOAD,
        SHELVING_IMAGE_UPLOADING,
    }
)
#: Task states of a rebuild under way (status REBUILD).
REBUILD_TASKS = frozenset({REBUILDING, REBUILD_SPAWNING})

#: Task states of power operations: found at agent start, their operation was lost with the agent.
POWER_TASKS = frozenset(
    {POWERING_OFF, POWERING_ON, REBOOTING, REBOOTING_HARD, PAUSING, UNPAUSING, SUSPENDING, RESUMING}
)

_STATUS = {
    ACTIVE: {
        "default": "ACTIVE",
        REBOOTING: "REBOOT",
        REBOOTING_HARD: "HARD_REBOOT",
        REBUILDING: "REBUILD",
        REBUILD_SPAWNING: "REBUILD",
    },
    BUILDING: {"default": "BUILD"},
    STOPPED: {"default": "SHUTOFF", REBOOTING_HARD: "HARD_REBOOT", REBUILDING: "REBUILD", REBUILD_SPAWNING: "REBUILD"},
    PAUSED: {"default": "PAUSED", REBOOTING_HARD: "HARD_REBOOT"},
    SUSPENDED: {"default": "SUSPENDED", REBOOTING_HARD: "HARD_REBOOT"},
    ERROR: {"default": "ERROR", REBOOTING_HARD: "HARD_REBOOT", REBUILDING: "REBUILD", REBUILD_SPAWNING: "REBUILD"},
    DELETED: {"default": "DELETED"},
    SOFT_DELETED: {"default": "SOFT_DELETED"},
    SHELVED: {"default": "SHELVED"},
    SHELVED_OFFLOADED: {"default": "SHELVED_OFFLOADED"},
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

# -- moving servers (issue 10): resize, cold migration --------------------------------------

#: A resized or cold-migrated server waiting for confirm or revert (status VERIFY_RESIZE).
RESIZED = "resized"
RESIZE_PREP = "resize_prep"
RESIZE_MIGRATING = "resize_migrating"
RESIZE_MIGRATED = "resize_migrated"
RESIZE_FINISH = "resize_finish"
RESIZE_REVERTING = "resize_reverting"
RESIZE_CONFIRMING = "resize_confirming"
#: Task states of a move under way before VERIFY_RESIZE (status RESIZE, Nova's state map).
RESIZE_TASKS = (RESIZE_PREP, RESIZE_MIGRATING, RESIZE_MIGRATED, RESIZE_FINISH)
for _table in (_STATUS[ACTIVE], _STATUS[STOPPED]):
    _table.update(dict.fromkeys(RESIZE_TASKS, "RESIZE"))
_STATUS[RESIZED] = {"default": "VERIFY_RESIZE", RESIZE_REVERTING: "REVERT_RESIZE"}

# -- live migration, evacuation (issue 10, second half) -------------------------------------

#: A live migration under way (status MIGRATING, Nova's state map; ACTIVE or PAUSED servers).
MIGRATING = "migrating"
for _table in (_STATUS[ACTIVE], _STATUS[PAUSED]):
    _table[MIGRATING] = "MIGRATING"
