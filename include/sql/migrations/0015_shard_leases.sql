-- Issue 24: one consumer per shard at any instant, and a hand-over between ingestion runs within
-- about a second. Each shard has a lease: its holder (`owner`, a consumer's token) renews it in every
-- micro-batch's transaction (the renewal is the fence: a consumer that no longer holds the lease
-- cannot commit), and lets it go right after its last commit when another consumer waits for it
-- (`waiter`). A consumer that dies without letting go loses the lease when it expires.
-- docs/dags.md (dialog_event_ingest, hand-over) describes the protocol.
CREATE TABLE shard_leases (
    stream         text        NOT NULL,
    shard_id       text        NOT NULL,
    owner          text,                  -- the consumer holding the lease; NULL: free
    owner_kind     text CHECK (owner_kind IN ('continuous', 'catch_up')),
    owner_run_id   text,                  -- the Airflow run of the holder (for operators)
    acquired_at    timestamptz,
    expires_at     timestamptz,
    waiter         text,                  -- the consumer waiting for the lease, if any
    waiter_kind    text CHECK (waiter_kind IN ('continuous', 'catch_up')),
    waiter_seen_at timestamptz,           -- a waiter not seen for a few seconds no longer counts
    handovers      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, shard_id)
);
