"""The libvirt/QEMU hypervisor driver (entry point ``libvirt``).

Modules: :mod:`.driver` (the driver), :mod:`.xml` (domain XML), :mod:`.configdrive`
(config drive ISO with pycdlib), :mod:`.network` (libvirt networks and DHCP host entries),
:mod:`.datapath` (Neutron networks' ports: :mod:`.bridges`, :mod:`.vxlan`, :mod:`.dhcp`,
:mod:`.firewall`, run through :mod:`.hostnet`).
Importing this package does not need libvirt-python; :meth:`LibvirtDriver.init_host` does.
"""

from novalite_drivers.libvirt.driver import LibvirtDriver, ensure_event_loop
from novalite_drivers.libvirt.network import ensure_isolated_network, ensure_network

__all__ = ["LibvirtDriver", "ensure_event_loop", "ensure_isolated_network", "ensure_network"]
