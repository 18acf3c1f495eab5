"""The project's JSON Schemas (manifest, latency results): loaded once, and a violation becomes one
line naming the file and the field."""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from ktedge.errors import KtedgeError


@cache
def load_schema(package: str, name: str) -> dict:
    return json.loads(resources.files(package).joinpath(name).read_text())


def check(data: Any, schema: dict, where: str, what: str) -> Any:
    """`data` if it follows `schema`, else a KtedgeError: '<where>: invalid <what> at <field>: ...'."""
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as e:
        field = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise KtedgeError(f"{where}: invalid {what} at '{field}': {e.message}") from None
    return data
