"""Request validation with JSON Schema, answered in Nova's words.

Nova reports schema failures as ``Invalid input for field/attribute <path>. Value:
<value>. <reason>``; clients and users rely on the field being named.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema import Draft4Validator

from novalite.api.errors import BadRequest

_validators: dict[int, Draft4Validator] = {}


def _validator(schema: dict[str, Any]) -> Draft4Validator:
    key = id(schema)
    validator = _validators.get(key)
    if validator is None:
        validator = _validators[key] = Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
    return validator


def validate(body: Any, schema: dict[str, Any]) -> Any:
    """Return ``body`` if it matches ``schema``; else raise 400 naming the field."""
    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(body))
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


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes", "on", "y", "t")
