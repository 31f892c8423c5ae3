-- memserve schema v5: memory versions (re-extraction from the stored raw messages).

-- A memory version is the set of entries one extraction configuration built. Version 1 is
-- everything built before this migration and by the ingest worker while it is active. Every
-- read that serves memories reads only the active version: the memory_version of the active
-- vector generation (a generation indexes exactly one memory version, so switching or rolling
-- back a generation switches the memories and their index together, in one transaction).
ALTER TABLE memory_entries ADD COLUMN version integer NOT NULL DEFAULT 1;
DROP INDEX memory_entries_user_ts_idx;
DROP INDEX memory_entries_user_session_idx;
CREATE INDEX memory_entries_user_version_ts_idx ON memory_entries (user_id, version, ts, id);
CREATE INDEX memory_entries_user_session_version_idx
    ON memory_entries (user_id, session_id, version);
CREATE INDEX memory_entries_version_idx ON memory_entries (version);

ALTER TABLE vector_generations
    ADD COLUMN memory_version integer NOT NULL DEFAULT 1,
    -- how that memory version was built (prompt, compression, LLM, entry unit, job id);
    -- NULL: the service's own configuration
    ADD COLUMN extraction jsonb;

-- The memory versions holding each message's memories: a message is 'done' in a version once
-- the entries built from it exist there. Appended in the transaction that writes the entries
-- (worker, or the re-extraction job), so a switch to a version can tell exactly which done
-- messages it lacks: a re-extraction catches them up before it may activate, a rollback
-- queues them for the worker (no message loses its memories across switches).
ALTER TABLE messages ADD COLUMN versions integer[] NOT NULL DEFAULT '{1}';
UPDATE messages SET versions = '{}' WHERE status <> 'done';
ALTER TABLE messages ALTER COLUMN versions SET DEFAULT '{}';

-- flush_index of the extraction tasks that a switch queues for messages missing from the
-- version switched to: -2, -3, ... (-1 is the session summary), never reused, so their facts
-- get entry ids of their own.
CREATE SEQUENCE requeue_flush_seq START 2;
