-- memserve schema v6: the per-user change counter is a revision, not a version.

-- users.index_revision moves on every change to a user's entries; search replicas compare it
-- with the revision their BM25 index was built at. "Version" names only memory versions
-- (memory_entries.version, vector_generations.memory_version).
ALTER TABLE users RENAME COLUMN index_version TO index_revision;
