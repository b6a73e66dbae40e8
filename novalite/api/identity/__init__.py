"""Keystone v3 subset: version documents, tokens, catalog, projects, users, roles.

The sub-application is built by ``routes.build``."""
