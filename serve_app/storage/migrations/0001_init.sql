-- memserve schema v1: PostgreSQL is the system of record.
CREATE TABLE users (
    user_id       text PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- bumped in the same transaction as any change to the user's memories;
    -- retrieval replicas compare it to decide whether their BM25 cache is stale
    index_version bigint NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    user_id           text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    session_id        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    next_seq          integer NOT NULL DEFAULT 0,
    metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    raw_tokens        bigint NOT NULL DEFAULT 0,
    compressed_tokens bigint NOT NULL DEFAULT 0,
    llm_input_tokens  bigint NOT NULL DEFAULT 0,
    llm_output_tokens bigint NOT NULL DEFAULT 0,
    llm_calls         bigint NOT NULL DEFAULT 0,
    summary           text,
    PRIMARY KEY (user_id, session_id)
);

CREATE TABLE messages (
    user_id      text NOT NULL,
    session_id   text NOT NULL,
    message_id   text NOT NULL,
    seq          integer NOT NULL,
    role         text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    name         text,
    content      text NOT NULL,
    ts           timestamptz NOT NULL,
    ts_provided  boolean NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    processed_at timestamptz,
    PRIMARY KEY (user_id, session_id, message_id),
    UNIQUE (user_id, session_id, seq),
    FOREIGN KEY (user_id, session_id) REFERENCES sessions (user_id, session_id) ON DELETE CASCADE
);
CREATE INDEX messages_pending_idx ON messages (received_at) WHERE status = 'pending';

CREATE TABLE memory_entries (
    id                 uuid PRIMARY KEY,
    user_id            text NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    session_id         text NOT NULL,
    kind               text NOT NULL DEFAULT 'message',
    text               text NOT NULL,
    index_text         text NOT NULL,
    ts                 timestamptz NOT NULL,
    weekday            text NOT NULL,
    speaker            text,
    source_message_ids text[] NOT NULL,
    topic_id           text,
    metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
    importance         real,
    embedding_model    text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (user_id, session_id) REFERENCES sessions (user_id, session_id) ON DELETE CASCADE
);
CREATE INDEX memory_entries_user_ts_idx ON memory_entries (user_id, ts, id);
CREATE INDEX memory_entries_user_session_idx ON memory_entries (user_id, session_id);
