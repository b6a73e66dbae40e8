"""Glance v2 subset: version documents and images (create, upload, download, patch...).

The sub-application is built by ``routes.build``."""
