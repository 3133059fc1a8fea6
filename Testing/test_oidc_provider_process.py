"""The test provider's process wrapper (Testing/oidc_provider.py) releases its log file however node ended."""

from __future__ import annotations

import pytest
from scripts.serve import free_port

from Testing.oidc_provider import IDP_DIR, SITE_USERS, OIDCProvider, new_key

pytestmark = pytest.mark.skipif(not (IDP_DIR / "node_modules" / "oidc-provider").is_dir(),
                                reason="the test provider needs `make test-idp`")


def test_stop_closes_the_log_after_node_exited_on_its_own(tmp_path):
    idp = OIDCProvider(tmp_path, SITE_USERS[:1], free_port())
    idp.start([new_key("k1")])
    log = idp._log
    idp.process.kill()
    idp.process.wait(timeout=10)
    idp.stop()
    assert log.closed and idp.process is None
    idp.stop()  # twice is harmless
