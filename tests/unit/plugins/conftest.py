"""Fixtures shared by the unit tests of the modules and module_utils (run by `ansible-test units`)."""

from __future__ import annotations

import pytest
from ansible_collections.llm_relay.homelab.tests.unit.plugins.scripted_api import ScriptedAPI


@pytest.fixture
def scripted_api():
    api = ScriptedAPI()
    yield api
    api.close()
