from __future__ import annotations

import pytest

from cartstream.core.settings import Settings
from cartstream.exceptions import ConfigurationError
from cartstream.streams.app import ROLES, group_id, parse_roles


def test_roles_parse_in_pipeline_order() -> None:
    assert parse_roles("all") == ROLES
    assert parse_roles("persist, reason,reason") == ("reason", "persist")
    with pytest.raises(ConfigurationError, match="unknown roles"):
        parse_roles("reason,dance")


def test_each_role_subset_is_its_own_consumer_group() -> None:
    s = Settings(app_id="cs")
    assert group_id(s, ROLES) == "cs"
    assert group_id(s, ("reason",)) == "cs-reason"
    assert group_id(s, ("detect", "reason")) != group_id(s, ("reason",))
