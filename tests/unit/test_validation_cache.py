"""The validator cache stays the same size however many requests validate with it.

Keypair creation used to build its schema per request, and the cache (keyed by the
schema's id, each validator keeping its schema alive) grew by one validator per call.
"""

from __future__ import annotations

import pytest

from novalite.api import validation
from novalite.api.compute.keypairs import create_schema
from novalite.api.compute.microversions import Microversion
from novalite.api.errors import BadRequest
from novalite.api.validation import validate

VERSIONS = [Microversion(2, minor) for minor in (1, 2, 9, 10, 35, 91, 92, 100)]


def body(i: int) -> dict[str, object]:
    return {"keypair": {"name": f"key-{i}", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@host"}}


def test_keypair_validations_do_not_grow_the_cache() -> None:
    for mv in VERSIONS:  # every schema variant compiled once
        validate(body(0), create_schema(mv))
    cached = len(validation._validators)
    for i in range(1000):
        assert validate(body(i), create_schema(VERSIONS[i % len(VERSIONS)])) == body(i)
    assert len(validation._validators) == cached


def test_keypair_schema_is_one_per_variant() -> None:
    assert len({id(create_schema(mv)) for mv in VERSIONS}) == 4
    with pytest.raises(BadRequest, match="'public_key' is a required property"):
        validate({"keypair": {"name": "k"}}, create_schema(Microversion(2, 92)))
    with pytest.raises(BadRequest, match="Additional properties are not allowed"):
        validate({"keypair": {"name": "k", "type": "ssh"}}, create_schema(Microversion(2, 1)))


def test_cache_is_bounded_and_never_mixes_up_schemas() -> None:
    """Schemas built per call are evicted past the bound; each still validates by its own rules."""
    for i in range(validation.MAX_VALIDATORS + 200):
        schema = {"type": "object", "properties": {"n": {"enum": [i]}}}
        assert validate({"n": i}, schema) == {"n": i}
        with pytest.raises(BadRequest):
            validate({"n": i + 1}, schema)
        assert len(validation._validators) <= validation.MAX_VALIDATORS
