"""A property-based run over the service's own OpenAPI spec (schemathesis + hypothesis) against a real
uvicorn, with and without the admin token: 0 server errors. A bounded number of cases per operation
(``FUZZ_EXAMPLES``; ``make soak`` runs more)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests.reliability.conftest import ADMIN_TOKEN

schemathesis = pytest.importorskip("schemathesis")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
# heavy model loads on first use; their inputs are fuzzed too, with fewer cases
SLOW = {"/v1/analyze-image", "/v1/ekyc-match", "/v1/listings", "/v1/auto-reply", "/v1/analyze-text"}


@pytest.mark.parametrize("token", [ADMIN_TOKEN, None], ids=["admin", "anonymous"])
def test_no_input_reaches_a_5xx(live, token):
    schema = schemathesis.openapi.from_url(f"{live.base}/openapi.json")
    headers = {"X-Admin-Token": token} if token else {}
    failures: list[str] = []
    calls = 0
    def check(case) -> None:
        nonlocal calls
        if token is None and case.headers:
            case.headers.pop("X-Admin-Token", None)
        resp = case.call(base_url=live.base, headers=headers, timeout=60)
        calls += 1
        if resp.status_code >= 500 and resp.status_code != 503:
            failures.append(f"{case.method.upper()} {case.path} -> {resp.status_code}: {resp.text[:300]}")

    for result in schema.get_all_operations():
        op = result.ok()
        n = max(EXAMPLES // 5, 3) if op.path in SLOW else EXAMPLES
        settings(max_examples=n, deadline=None, database=None, derandomize=True,
                 suppress_health_check=list(HealthCheck))(given(case=op.as_strategy())(check))()
    print(f"fuzz: {calls} calls, {len(failures)} server errors (token={bool(token)})")
    assert calls > 100
    assert not failures, "\n".join(failures[:20])
