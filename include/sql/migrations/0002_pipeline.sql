-- The pipeline's own tables: stream checkpoints, set-aside bad records, the command outbox.

-- One row per (stream, shard): the last sequence number whose effects are committed.
-- Written in the same transaction as the state changes it covers.
CREATE TABLE stream_checkpoints (
    stream           text        NOT NULL,
    shard_id         text        NOT NULL,
    sequence_number  text,
    parent_shard_ids text[]      NOT NULL DEFAULT '{}',
    shard_closed     boolean     NOT NULL DEFAULT false,  -- a closed shard read to its end
    records_applied  bigint      NOT NULL DEFAULT 0,
    behind_ms        bigint,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, shard_id)
);

-- Bad input, set aside with the reason; never silently dropped, never set aside twice.
CREATE TABLE rejected_records (
    id              bigserial   PRIMARY KEY,
    stream          text        NOT NULL,
    shard_id        text        NOT NULL,
    sequence_number text        NOT NULL,
    partition_key   text,
    raw_data        bytea       NOT NULL,
    reason          text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 1,
    rejected_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rejected_records_position_unique UNIQUE (stream, shard_id, sequence_number)
);
CREATE INDEX rejected_records_rejected_at_idx ON rejected_records (rejected_at);

-- Transactional outbox: commands are written with the state change that causes them and
-- published after commit; idempotency_key makes a re-delivered cause write nothing new.
CREATE TABLE command_outbox (
    id              bigserial   PRIMARY KEY,
    idempotency_key text        NOT NULL UNIQUE,
    command_type    text        NOT NULL,
    partition_key   text        NOT NULL,
    payload         jsonb       NOT NULL,
    source          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text
);
CREATE INDEX command_outbox_unpublished_idx ON command_outbox (id) WHERE published_at IS NULL;
CREATE INDEX command_outbox_published_at_idx ON command_outbox (published_at);
