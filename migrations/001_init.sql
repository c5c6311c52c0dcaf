-- migrations/001_init.sql — the Onyx-compatible tables snapworker reads and writes
-- (docs/database.md) for a standalone install.
-- Run by `snapworker migrate` inside one transaction (no BEGIN/COMMIT here, nothing that
-- cannot run in a transaction). IF NOT EXISTS everywhere: an existing Onyx schema is left
-- as it is. No "user" table and no foreign key to one: user_id is a plain uuid.
-- Status columns are VARCHAR holding lowercase strings, as in Onyx.

CREATE TABLE IF NOT EXISTS build_session (
    id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           uuid        NULL,
    name              varchar     NULL,
    status            varchar     NOT NULL DEFAULT 'active',   -- active | idle
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_activity_at  timestamptz NOT NULL DEFAULT now(),
    nextjs_port       integer     NULL,
    demo_data_enabled boolean     NOT NULL DEFAULT true
);

CREATE TABLE IF NOT EXISTS sandbox (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid        NOT NULL UNIQUE,
    container_id   varchar     NULL,
    status         varchar     NOT NULL DEFAULT 'provisioning', -- provisioning|running|sleeping|terminated|failed
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NULL
);

CREATE TABLE IF NOT EXISTS snapshot (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id   uuid        NOT NULL REFERENCES build_session (id) ON DELETE CASCADE,
    storage_path varchar     NOT NULL,
    size_bytes   bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Onyx's index for "latest snapshot of a session".
CREATE INDEX IF NOT EXISTS ix_snapshot_session_created
    ON snapshot (session_id, created_at DESC);

-- Added by snapworker (docs/database.md "What snapworker adds"):
-- 1. No two sessions of one user share a port, even when something other than snapworker
--    writes nextjs_port (the index later Onyx versions create for the kubernetes scope).
--    The global scope of the local backend is guarded by the allocator's advisory lock.
CREATE UNIQUE INDEX IF NOT EXISTS ux_build_session_user_nextjs_port
    ON build_session (user_id, nextjs_port) WHERE nextjs_port IS NOT NULL;
-- 2. The allocator's "is this port held?" probe reads only sessions holding a port.
CREATE INDEX IF NOT EXISTS ix_build_session_nextjs_port
    ON build_session (nextjs_port) WHERE nextjs_port IS NOT NULL;
