"""Request validation with JSON Schema, answered in Nova's words.

Nova reports schema failures as ``Invalid input for field/attribute <path>. Value:
<value>. <reason>``; clients and users rely on the field being named.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import jsonschema
from jsonschema import Draft4Validator

from novalite.api.errors import BadRequest

#: The most validators kept. Handlers pass module-level schemas (a few dozen in all), so
#: this is never reached in normal use; it bounds the cache if a schema is built per call.
MAX_VALIDATORS = 256

#: Compiled validators by ``id(schema)``, least recently used first. The validator keeps
#: its schema alive, and a hit is checked with ``is``: an id reused by a new dict after an
#: eviction can never return another schema's validator.
_validators: OrderedDict[tuple[int, bool], Draft4Validator] = OrderedDict()


def compiled_validator(schema: dict[str, Any], *, formats: bool = True) -> Draft4Validator:
    """The compiled validator of ``schema`` (compiling is far dearer than validating), with
    ``format`` checks (Nova's and Glance's schemas) or without (Keystone's). One bounded
    cache for every API."""
    key = (id(schema), formats)
    validator = _validators.get(key)
    if validator is not None and validator.schema is schema:
        _validators.move_to_end(key)
        return validator
    checker = jsonschema.FormatChecker() if formats else None
    validator = _validators[key] = Draft4Validator(schema, format_checker=checker)
    _validators.move_to_end(key)
    while len(_validators) > MAX_VALIDATORS:
        _validators.popitem(last=False)
    return validator


def validate(body: Any, schema: dict[str, Any]) -> Any:
    """Return ``body`` if it matches ``schema``; else raise 400 naming the field."""
    error = jsonschema.exceptions.best_match(compiled_validator(schema).iter_errors(body))
    if error is None:
        return body
    if error.validator == "required":
        raise BadRequest(error.message)
    if error.validator == "additionalProperties":
        where = ".".join(str(p) for p in error.path)
        prefix = f"Invalid input for field/attribute {where}. " if where else ""
        raise BadRequest(f"{prefix}{error.message}")
    # Nova names the innermost field ("ram", not "flavor/ram").
    path = str(error.path[-1]) if error.path else "body"
    raise BadRequest(f"Invalid input for field/attribute {path}. Value: {error.instance}. {error.message}")


# Reusable pieces ------------------------------------------------------------------------


def name_schema(max_length: int = 255) -> dict[str, Any]:
    """Nova's server/flavor name: 1..255 chars, no leading/trailing whitespace."""
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": r"^(?! )[^\x00-\x1f]*(?<! )$"}


boolean = {
    "type": ["boolean", "string"],
    "enum": [True, False, "True", "False", "true", "false", "1", "0", "yes", "no"],
}
positive_int = {"type": ["integer", "string"], "pattern": "^[0-9]*$", "minimum": 1}
non_negative_int = {"type": ["integer", "string"], "pattern": "^[0-9]*$", "minimum": 0}
metadata_schema = {
    "type": "object",
    "patternProperties": {"^[a-zA-Z0-9-_:. ]{1,255}$": {"type": "string", "maxLength": 255}},
    "additionalProperties": False,
}


#: The words OpenStack (oslo's ``strutils.bool_from_string``) reads as booleans, in any case.
TRUE_WORDS = frozenset({"1", "t", "true", "on", "y", "yes"})
FALSE_WORDS = frozenset({"0", "f", "false", "off", "n", "no"})


def bool_word(value: str) -> bool | None:
    """True or False for one of the boolean words (spaces and case ignored); None for anything else."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def to_bool(value: Any) -> bool:
    """Lenient: anything but a true word is false."""
    if isinstance(value, bool):
        return value
    return bool_word(str(value)) is True
