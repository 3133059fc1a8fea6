"""Who changed which adapter is live or exists: activate, rollback, delete and import each record the user (the
token's with auth on, MONAI Label's default `admin` with it off), with no server."""

from __future__ import annotations

import pytest

from lib.medfm.adapter_store import BASE
from lib.medfm.registry import Registry
from lib.medfm.service import MedFMService
from lib.medfm.settings import Settings
from Testing.test_guard import register


@pytest.fixture
def registry(tmp_path) -> Registry:
    return Registry(MedFMService(Settings(models_dir=tmp_path)))


def test_rollback_and_delete_record_who(registry):
    first, second = register(registry, None), register(registry, None)
    registry.activate(first, user="adam")
    registry.activate(second, user="adam")
    assert registry.rollback(user="bea") == {"active": first}
    manual = registry.get(first)["decision"]["manual"]
    assert manual[-1]["by"] == "bea" and manual[-1]["rollback_from"] == second and manual[-1]["at"]
    registry.delete(second, user="carl")
    assert registry.rollback(user="bea") == {"active": BASE}
    events = [(e["action"], e["version"], e["by"]) for e in registry.audit()]
    assert events == [("activate", first, "adam"), ("activate", second, "adam"), ("rollback", first, "bea"),
                      ("delete", second, "carl"), ("rollback", BASE, "bea")]
    assert registry.audit()[2]["replaced"] == second and all(e["at"] for e in registry.audit())


def test_a_refused_change_records_nothing(registry):
    version = register(registry, None)
    registry.activate(version, user="adam")
    with pytest.raises(Exception, match="active"):
        registry.delete(version, user="carl")
    assert [e["action"] for e in registry.audit()] == ["activate"]
