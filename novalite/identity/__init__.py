"""Identity: users, projects, roles and tokens (the Keystone v3 subset novalite serves).

The HTTP side lives in ``novalite/api/identity``; this package holds the logic the
compute and image APIs also need (validating a token into a request context).
"""
