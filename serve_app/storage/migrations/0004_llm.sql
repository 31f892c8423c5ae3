-- memserve schema v4: LLM memory construction (issue 4).

-- LLM work waiting in PostgreSQL: one row per flushed short-term buffer ('extract') and per
-- requested session summary ('summary', flush_index -1). A row lives until its result is
-- committed, in the same transaction; so an unreachable LLM leaves it pending (retried from
-- not_before on), and output that cannot be used leaves it 'failed' with the error, until a
-- retry is requested. A worker takes a row with a lease (lease_token, leased_until) instead of
-- holding a lock across the LLM call: a crashed worker's lease runs out and another one takes
-- over; erasing the user never waits for an LLM.
CREATE TABLE llm_tasks (
    user_id      text NOT NULL,
    session_id   text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('extract', 'summary')),
    flush_index  integer NOT NULL,
    -- extract: [{"topic_index": int, "message_ids": [...]}] in order
    segments     jsonb NOT NULL DEFAULT '[]'::jsonb,
    message_ids  text[] NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    not_before   timestamptz NOT NULL DEFAULT now(),
    lease_token  uuid,
    leased_until timestamptz,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, session_id, kind, flush_index),
    FOREIGN KEY (user_id, session_id) REFERENCES sessions (user_id, session_id) ON DELETE CASCADE
);
CREATE INDEX llm_tasks_ready_idx ON llm_tasks (not_before) WHERE status = 'pending';

-- The structured session summary beside sessions.summary (its text form).
ALTER TABLE sessions
    ADD COLUMN summary_json jsonb,
    ADD COLUMN summary_at   timestamptz;

-- Calls and tokens per LLM backend and model, all users together (per-session figures are in
-- sessions.llm_*). Every request sent counts as a call, whatever its outcome.
CREATE TABLE llm_usage (
    backend           text NOT NULL,
    model             text NOT NULL,
    calls             bigint NOT NULL DEFAULT 0,
    ok                bigint NOT NULL DEFAULT 0,
    transient_errors  bigint NOT NULL DEFAULT 0,
    timeouts          bigint NOT NULL DEFAULT 0,
    backend_down      bigint NOT NULL DEFAULT 0,
    rejected          bigint NOT NULL DEFAULT 0,
    parse_failures    bigint NOT NULL DEFAULT 0,
    repair_calls      bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (backend, model)
);

-- A flush at the end of a session (flush: true, or a summary request) also asks for the
-- session summary; a flush implied by `wait` does not. The worker that satisfies the flush
-- queues the summary task in the same transaction.
ALTER TABLE flush_requests ADD COLUMN summarize boolean NOT NULL DEFAULT false;
