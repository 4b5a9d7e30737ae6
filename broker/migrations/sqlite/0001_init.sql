-- Initial schema (SQLite). Times are milliseconds since the Unix epoch.
CREATE TABLE tokens (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'user', 'node')),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE nodes (
    id          TEXT PRIMARY KEY,
    site        TEXT NOT NULL,
    version     TEXT NOT NULL,
    hostname    TEXT NOT NULL,
    last_seen_at BIGINT NOT NULL
);

CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    serial          TEXT NOT NULL,
    node_id         TEXT NOT NULL,
    site            TEXT NOT NULL,
    platform        TEXT NOT NULL,
    model           TEXT NOT NULL,
    manufacturer    TEXT NOT NULL,
    android_version TEXT NOT NULL,
    sdk             BIGINT NOT NULL,
    screen_width    BIGINT NOT NULL,
    screen_height   BIGINT NOT NULL,
    density         BIGINT NOT NULL,
    battery_level   BIGINT NOT NULL,
    tags            TEXT NOT NULL DEFAULT '[]',
    presence        TEXT NOT NULL CHECK (presence IN ('online', 'offline', 'unauthorized')),
    state_since     BIGINT NOT NULL,
    fencing_counter BIGINT NOT NULL DEFAULT 0
);

-- Every presence change, for availability reports.
CREATE TABLE device_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   TEXT NOT NULL REFERENCES devices(id),
    presence    TEXT NOT NULL,
    at          BIGINT NOT NULL,
    node_id     TEXT NOT NULL
);
CREATE INDEX device_history_by_device ON device_history (device_id, at);

CREATE TABLE leases (
    id            TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL REFERENCES devices(id),
    holder        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    ttl_ms        BIGINT NOT NULL,
    fencing_token BIGINT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('active', 'ended')),
    end_reason    TEXT,
    ended_at      BIGINT
);
-- No double-booking: at most one active lease per device, whatever the code does.
CREATE UNIQUE INDEX leases_one_active_per_device ON leases (device_id) WHERE state = 'active';
CREATE INDEX leases_by_device ON leases (device_id, created_at);
