"""benchmarks/auth_check.py on the machine's PostgreSQL, few checks: its report, and the budget
of a cached key check (well under 1 ms)."""

import json

from benchmarks import auth_check
from tests.pg import ADMIN_DSN


def test_auth_check_reports_each_kind_of_check(tmp_path, capsys):
    result = auth_check.main(
        ["--pg-admin-dsn", ADMIN_DSN, "--n", "300", "--out-dir", str(tmp_path)]
    )
    assert json.loads((tmp_path / "auth_check.json").read_text())["checks"] == result["checks"]
    assert set(result["checks"]) == {"admin_key", "tenant_key_cached", "tenant_key_cache_miss"}
    for stats in result["checks"].values():
        assert stats["n"] == 300 and 0 < stats["p50_us"] <= stats["p95_us"] <= stats["max_us"]
    assert result["checks"]["tenant_key_cached"]["p95_us"] < 1000
    assert '"tenant_key_cached"' in capsys.readouterr().out
