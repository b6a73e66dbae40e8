"""The network API: a Neutron v2.0 subset under ``/network`` (catalog type ``network``, name ``neutron``)."""
