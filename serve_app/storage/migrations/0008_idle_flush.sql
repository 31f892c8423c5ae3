-- Sessions whose buffers hold messages: the ones an idle flush looks at, oldest state first.
CREATE INDEX session_buffers_held_idx ON session_buffers (updated_at)
    WHERE buffered_messages > 0;
