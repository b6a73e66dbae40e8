"""The REST API: one aiohttp application with Keystone, Nova and Glance mounted under
``/identity``, ``/compute`` and ``/image``. One module per group of handlers; the API
never calls a driver: it writes the database and casts to the conductor or an agent.
"""
