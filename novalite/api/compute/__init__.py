"""Nova v2.1 with microversions: one module per group of handlers.

The sub-application is built by ``routes.build``."""
