"""Make the OpenAPI schema promise what the API does, for every operation (a drf-spectacular
postprocessing hook; `tests/test_fuzz_api.py` holds the API to it with every schemathesis check).

* Every operation documents the refusals any request may get (the `Error` shape): 400, 401, 403,
  404 and 429 (the token endpoint's throttle, the sign-in lockout); a change also 409 (conflict),
  and one that sends a body (not DELETE) 413 (too large) and 415 (not a type we read).
* Bodies are documented as JSON, the API's format; multipart only where a file is sent. The API
  still reads HTML forms (the browsable API), but a form cannot say `null` or hold a JSON
  object, so a client written from the schema should not use one.
* An empty optional query parameter (`?role=`) means "not given", as in HTML forms (DRF and
  django-filter read it so): `allowEmptyValue` says so.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}
ANY_REQUEST = {
    "400": "Invalid input (the fields are named).",
    "401": "Not signed in, or the token has expired.",
    "403": "The user's role may not do this.",
    "404": "No such object, or no such address.",
    "429": "Too many attempts: wait and try again.",
}
A_CHANGE = {
    "409": "Conflicts with the current state (duplicate, stale version, illegal status change).",
}
WITH_BODY = {
    "413": "The body is larger than the server accepts.",
    "415": "The body is not of a type this operation reads.",
}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
METHODS = ("get", "put", "post", "patch", "delete")


def _sends_a_file(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    if "$ref" in schema:
        schema = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
    return any(prop.get("format") == "binary" for prop in schema.get("properties", {}).values())


def _json_bodies_only(operation: dict[str, Any], components: dict[str, Any]) -> None:
    content: dict[str, Any] = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return
    if any(_sends_a_file(content[kind].get("schema", {}), components) for kind in content):
        for kind in ("application/json", "application/x-www-form-urlencoded"):
            content.pop(kind, None)
        return
    for kind in FORM_TYPES:
        content.pop(kind, None)


def document_refusals_and_bodies(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    components = result.get("components", {}).get("schemas", {})
    for item in result.get("paths", {}).values():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            refusals = {
                **ANY_REQUEST,
                **(A_CHANGE if method != "get" else {}),
                **(WITH_BODY if method in ("put", "post", "patch") else {}),
            }
            responses = operation.setdefault("responses", {})
            for code, description in refusals.items():
                responses.setdefault(
                    code,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": ERROR_SCHEMA}},
                    },
                )
            _json_bodies_only(operation, components)
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and not parameter.get("required"):
                    parameter["allowEmptyValue"] = True
    return result
