"""The OpenAPI document states what the API does: one error model for every 4xx, the id rule
as a pattern that agrees with `check_id` character for character, the API key only where
the server has one. (The live check, schemathesis over real services, is
tests/integration/test_api_fuzz.py.)"""

from __future__ import annotations

import sys
from typing import Any

import jsonschema_rs
import pytest
from pydantic import SecretStr

from api.main import create_app
from core.settings import Settings
from schemas.events import check_id

pytestmark = pytest.mark.unit

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def document(**settings: Any) -> dict[str, Any]:
    return create_app(Settings(**settings)).openapi()


def test_every_4xx_declares_the_one_error_model() -> None:
    doc = document(api_key=SecretStr("k"))
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    declared = set()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                declared.add((method.upper(), path, status))
                if status == "400":  # the HTTP server's own, before the app
                    assert set(response["content"]) == {"text/plain"}
                elif status.startswith(("4", "5")) and path != "/health/ready":
                    assert response["content"]["application/json"]["schema"] == ERROR_BODY
    for status in ("401", "413", "422", "503"):
        assert ("POST", "/events", status) in declared
    for path in ("/recommend/{user_id}", "/users/{user_id}/profile", "/items/{item_id}/similar"):
        assert ("GET", path, "422") in declared


def test_the_api_key_is_declared_only_where_the_server_has_one() -> None:
    keyed = document(api_key=SecretStr("k"))
    assert keyed["paths"]["/events"]["post"]["security"] == [{"ApiKey": []}]
    assert keyed["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
    open_ = document()
    assert "security" not in open_["paths"]["/events"]["post"]
    assert "401" not in open_["paths"]["/events"]["post"]["responses"]
    assert "securitySchemes" not in open_["components"]


def test_the_id_pattern_is_check_id_exactly() -> None:
    """Every code point, alone and next to a letter, judged the same way by the document's
    pattern (read as a JSON Schema validator reads it) and by `check_id`."""
    doc = document()
    validator = jsonschema_rs.validator_for(doc["components"]["schemas"]["Id"])

    def accepted(value: str) -> bool:
        try:
            check_id(value)
        except ValueError:
            return False
        return True

    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:  # lone surrogates cannot be sent as UTF-8
            continue
        for value in (chr(code), "a" + chr(code)):
            assert validator.is_valid(value) == accepted(value), hex(code)
    for value in ("", " ", "   ", " a ", "a" * 128, "a" * 129):
        assert validator.is_valid(value) == accepted(value), repr(value)
    paths = doc["paths"]
    assert paths["/recommend/{user_id}"]["get"]["parameters"][0]["schema"] == {
        "$ref": "#/components/schemas/Id"
    }
