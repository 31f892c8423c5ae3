-- memserve schema v3: offline batch jobs (consolidation, linking, embedding rebuilds).

-- One row per job; the job's driver updates progress, GET /v1/jobs/{id} reads it.
CREATE TABLE jobs (
    id            uuid PRIMARY KEY,
    kind          text NOT NULL,
    user_id       text,  -- NULL: every user
    params        jsonb NOT NULL DEFAULT '{}'::jsonb,
    state         jsonb NOT NULL DEFAULT '{}'::jsonb,  -- what a restart must reuse
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'stopped')),
    stage         text,
    total         bigint NOT NULL DEFAULT 0,
    done          bigint NOT NULL DEFAULT 0,
    rate_per_s    double precision,
    eta_s         double precision,
    result        jsonb NOT NULL DEFAULT '{}'::jsonb,
    error         text,
    submission_id text,
    attempts      integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);

-- Work a job has finished, per stage: a restarted job skips these (resumable, idempotent).
CREATE TABLE job_items (
    job_id  uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    stage   text NOT NULL,
    item_id text NOT NULL,
    PRIMARY KEY (job_id, stage, item_id)
);

-- Consolidation's update queue: per newer entry (anchor), its similar older entries, then the
-- decision taken for the group and whether it was applied. Kept in PostgreSQL, not in the
-- vector payload, so it survives restarts and can be audited.
CREATE TABLE consolidation_groups (
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    user_id     text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    anchor_id   uuid NOT NULL,
    candidates  jsonb NOT NULL,  -- [{"id", "score"}], most similar first
    decision    jsonb,           -- NULL until decided
    outcome     text,            -- applied | stale | unchanged, once applied
    PRIMARY KEY (job_id, anchor_id)
);
CREATE INDEX consolidation_groups_user_idx ON consolidation_groups (job_id, user_id);

-- Entries removed by consolidation: the whole row, why, and the entry that superseded it, so a
-- wrong decision can be reverted. Erasing the user erases these too.
CREATE TABLE memory_tombstones (
    id            uuid PRIMARY KEY,
    user_id       text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    entry         jsonb NOT NULL,
    action        text NOT NULL CHECK (action IN ('merged', 'contradicted')),
    reason        text NOT NULL,
    superseded_by uuid,
    job_id        uuid,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX memory_tombstones_user_idx ON memory_tombstones (user_id, created_at);

-- Text changes made by consolidation (before / after), for audit and revert.
CREATE TABLE memory_revisions (
    revision           bigserial PRIMARY KEY,
    entry_id           uuid NOT NULL,
    user_id            text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    old_text           text NOT NULL,
    new_text           text NOT NULL,
    old_source_ids     text[] NOT NULL,
    merged_ids         uuid[] NOT NULL,
    job_id             uuid,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX memory_revisions_entry_idx ON memory_revisions (entry_id);

-- Links between related memories (A-MEM's notes), stored once per unordered pair (src < dst).
CREATE TABLE memory_links (
    user_id    text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    src        uuid NOT NULL REFERENCES memory_entries (id) ON DELETE CASCADE,
    dst        uuid NOT NULL REFERENCES memory_entries (id) ON DELETE CASCADE,
    reason     text NOT NULL,
    score      real NOT NULL,
    job_id     uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (src, dst),
    CHECK (src < dst)
);
CREATE INDEX memory_links_dst_idx ON memory_links (dst);

-- Vector index generations: one Qdrant collection (set) per embedding model. The router
-- searches the 'active' one; a rebuild fills a 'building' one and switches; the replaced one
-- becomes 'previous', kept so that rollback is one call.
CREATE TABLE vector_generations (
    generation      integer PRIMARY KEY,
    embedding_model text NOT NULL,
    dim             integer NOT NULL,
    collection      text NOT NULL,
    status          text NOT NULL
                    CHECK (status IN ('building', 'active', 'previous', 'retired')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    activated_at    timestamptz
);
CREATE UNIQUE INDEX vector_generations_one_active ON vector_generations (status)
    WHERE status = 'active';
CREATE UNIQUE INDEX vector_generations_one_previous ON vector_generations (status)
    WHERE status = 'previous';

-- Entries already embedded into a generation whose model is not the serving embedder's (a
-- rebuild's target): the rebuild job and the router's catch-up sweep fill it; a text change
-- removes the row so the entry is embedded again.
CREATE TABLE generation_members (
    generation integer NOT NULL REFERENCES vector_generations (generation) ON DELETE CASCADE,
    entry_id   uuid NOT NULL REFERENCES memory_entries (id) ON DELETE CASCADE,
    PRIMARY KEY (generation, entry_id)
);
CREATE INDEX generation_members_entry_idx ON generation_members (entry_id);
