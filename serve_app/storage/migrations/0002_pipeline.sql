-- memserve schema v2: the LightMem pipeline (compression, topic buffers, flush, token totals).

-- 'buffered': taken into the session's buffers (state in session_buffers), not yet a memory.
-- A message is 'done' only once the memory entries built from it exist.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('pending', 'buffered', 'done', 'failed'));
-- LLMLingua-2 output beside the original (NULL when compression was off); cl100k_base counts.
ALTER TABLE messages
    ADD COLUMN compressed        text,
    ADD COLUMN raw_tokens        integer,
    ADD COLUMN compressed_tokens integer;

ALTER TABLE sessions
    ADD COLUMN segments bigint NOT NULL DEFAULT 0,  -- topic segments cut so far
    ADD COLUMN flushes  bigint NOT NULL DEFAULT 0;  -- short-term buffers turned into memories

-- One row per session: the resumable buffer state (SessionBuffers.to_json()). A worker locks
-- the row (FOR UPDATE SKIP LOCKED) for its whole transaction, so two replicas never process
-- one session at once, and saves the state in the transaction that changes message statuses.
CREATE TABLE session_buffers (
    user_id           text NOT NULL,
    session_id        text NOT NULL,
    state             jsonb NOT NULL DEFAULT '{}'::jsonb,
    buffered_messages integer NOT NULL DEFAULT 0,
    buffered_tokens   integer NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, session_id),
    FOREIGN KEY (user_id, session_id) REFERENCES sessions (user_id, session_id) ON DELETE CASCADE
);

-- The row must exist before any worker needs to lock it: create it with the session.
CREATE FUNCTION memserve_create_session_buffer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO session_buffers (user_id, session_id) VALUES (NEW.user_id, NEW.session_id)
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;
CREATE TRIGGER sessions_create_buffer AFTER INSERT ON sessions
    FOR EACH ROW EXECUTE FUNCTION memserve_create_session_buffer();
INSERT INTO session_buffers (user_id, session_id)
    SELECT user_id, session_id FROM sessions ON CONFLICT DO NOTHING;

-- Outstanding flushes: everything up to upto_seq must become memories. Durable, so whichever
-- worker replica takes the session honours it; deleted once satisfied.
CREATE TABLE flush_requests (
    user_id      text NOT NULL,
    session_id   text NOT NULL,
    upto_seq     integer NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (user_id, session_id),
    FOREIGN KEY (user_id, session_id) REFERENCES sessions (user_id, session_id) ON DELETE CASCADE
);

-- Per-user token totals: a view over the per-session counters, so there is one bookkeeping.
CREATE VIEW user_token_totals AS
SELECT user_id,
       count(*)                        AS sessions,
       sum(raw_tokens)::bigint         AS raw_tokens,
       sum(compressed_tokens)::bigint  AS compressed_tokens,
       sum(llm_input_tokens)::bigint   AS llm_input_tokens,
       sum(llm_output_tokens)::bigint  AS llm_output_tokens,
       sum(llm_calls)::bigint          AS llm_calls,
       sum(segments)::bigint           AS segments,
       sum(flushes)::bigint            AS flushes
FROM sessions
GROUP BY user_id;
