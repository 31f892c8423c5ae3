-- memserve schema v7: API keys, the audit log, jobs owned by a tenant.

-- Only the SHA-256 of a key is stored; the secret is shown once, when the key is created.
CREATE TABLE api_keys (
    id                 uuid PRIMARY KEY,
    key_hash           text NOT NULL UNIQUE,
    tenant             text NOT NULL,
    name               text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    last_used_at       timestamptz,
    expires_at         timestamptz,
    revoked_at         timestamptz,
    rate_limit_per_min integer
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant, created_at);

-- One row per change, appended in the change's own transaction. user_id is the caller's
-- (tenant-relative) id; no memory content is kept here.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    key_id     text NOT NULL,
    tenant     text NOT NULL,
    user_id    text,
    action     text NOT NULL,
    object_ids text[] NOT NULL DEFAULT '{}',
    request_id text
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant, id);
CREATE INDEX audit_log_at_idx ON audit_log (at);

ALTER TABLE jobs ADD COLUMN tenant text NOT NULL DEFAULT 'default';
CREATE INDEX jobs_tenant_active_idx ON jobs (tenant) WHERE status IN ('pending', 'running');
