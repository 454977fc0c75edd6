-- Live workers, so they can agree who owns which shard (rendezvous hashing)
-- and split the bot's rate limit by those shares.
CREATE TABLE workers (
    worker_id  TEXT        PRIMARY KEY,
    seen_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
