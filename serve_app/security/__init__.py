"""API keys, tenants and rate limits: pure logic (no web framework, no SQL)."""
