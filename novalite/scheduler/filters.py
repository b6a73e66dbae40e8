"""Scheduler filters: each answers "can this host take this instance?".

A filter is a class with ``host_passes(host, spec) -> bool``; the scheduler keeps the
hosts every filter passes. Nova's defaults, reduced to what novalite's hosts report.
"""

from __future__ import annotations

from novalite.scheduler.hoststate import HostState, RequestSpec


class BaseFilter:
    name = "base"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        raise NotImplementedError


class ComputeFilter(BaseFilter):
    """The host's compute service is up and not disabled by an admin."""

    name = "ComputeFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.up and not host.disabled


class ResourcesFilter(BaseFilter):
    """Room for the flavor's vCPUs, RAM and disk, with the allocation ratios applied.

    (In Nova, placement pre-filters on this; the claim re-checks it atomically.)
    """

    name = "ResourcesFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.usage.fits(spec.resources)


class AvailabilityZoneFilter(BaseFilter):
    """The host is in the requested availability zone (if any)."""

    name = "AvailabilityZoneFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return not spec.availability_zone or host.availability_zone == spec.availability_zone


class ForcedHostFilter(BaseFilter):
    """An admin's ``zone:host`` request pins the instance to that host."""

    name = "ForcedHostFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return not spec.force_host or spec.force_host in (host.host, host.node)


class ImagePropertiesFilter(BaseFilter):
    """The image's ``hw_architecture`` and ``img_hv_type`` (if set) match the host."""

    name = "ImagePropertiesFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        props = spec.image_properties
        arch = props.get("hw_architecture") or props.get("architecture")
        if arch and host.cpu_info.get("arch") and arch != host.cpu_info["arch"]:
            return False
        hv_type = props.get("img_hv_type") or props.get("hypervisor_type")
        return not (
            hv_type
            and hv_type.lower()
            not in (host.hypervisor_type.lower(), "qemu" if host.hypervisor_type.lower() == "kvm" else "")
        )


DEFAULT_FILTERS: list[type[BaseFilter]] = [
    ComputeFilter,
    ForcedHostFilter,
    AvailabilityZoneFilter,
    ImagePropertiesFilter,
    ResourcesFilter,
]
