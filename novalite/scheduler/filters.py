"""Scheduler filters: each answers "can this host take this instance?".

A filter is a class with ``host_passes(host, spec) -> bool``; the scheduler keeps the
hosts every filter passes. Nova's defaults, reduced to what novalite's hosts report.

The scheduler calls ``filter_all`` once per filter and request, so a filter that has
nothing to check for this request (no zone asked, no host forced) returns the list as it
is instead of being called once per host: with 1,000 hosts that is most of the cost.
"""

from __future__ import annotations

from novalite.scheduler.hoststate import HostState, RequestSpec


class BaseFilter:
    name = "base"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        raise NotImplementedError

    def applies(self, spec: RequestSpec) -> bool:
        """False when this request gives the filter nothing to check."""
        return True

    def filter_all(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
        if not self.applies(spec):
            return hosts
        return [h for h in hosts if self.host_passes(h, spec)]


class ComputeFilter(BaseFilter):
    """The host's compute service is up and not disabled by an admin."""

    name = "ComputeFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.up and not host.disabled

    def filter_all(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
        return [h for h in hosts if h.up and not h.disabled]


class ResourcesFilter(BaseFilter):
    """Room for the flavor's vCPUs, RAM and disk, with the allocation ratios applied.

    (In Nova, placement pre-filters on this; the claim re-checks it atomically.)
    """

    name = "ResourcesFilter"

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return host.usage.fits(spec.resources)

    def filter_all(self, hosts: list[HostState], spec: RequestSpec) -> list[HostState]:
        resources = spec.resources  # computed once, not once per host
        return [h for h in hosts if h.usage.fits(resources)]


class AvailabilityZoneFilter(BaseFilter):
    """The host is in the requested availability zone (if any)."""

    name = "AvailabilityZoneFilter"

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.availability_zone)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return not spec.availability_zone or host.availability_zone == spec.availability_zone


class ForcedHostFilter(BaseFilter):
    """An admin's ``zone:host`` request pins the instance to that host."""

    name = "ForcedHostFilter"

    def applies(self, spec: RequestSpec) -> bool:
        return bool(spec.force_host)

    def host_passes(self, host: HostState, spec: RequestSpec) -> bool:
        return not spec.force_host or spec.force_host in (host.host, host.node)


class ImagePropertiesFilter(BaseFilter):
    """The image's ``hw_architecture`` and ``img_hv_type`` (if set) match the host."""

    name = "ImagePropertiesFilter"

    def applies(self, spec: RequestSpec) -> bool:
        props = spec.image_properties
        return any(k in props for k in ("hw_architecture", "architecture", "img_hv_type", "hypervisor_type"))

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
