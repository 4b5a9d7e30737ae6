-- Sessions on devices: live (WebRTC) and WebDriver. Who, what, when, and why it ended.
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('live', 'webdriver')),
    device_id    TEXT NOT NULL,
    holder       TEXT NOT NULL,
    mode         TEXT NOT NULL DEFAULT '',
    capabilities TEXT NOT NULL DEFAULT '',
    lease_id     TEXT,
    started_at   BIGINT NOT NULL,
    ended_at     BIGINT,
    end_reason   TEXT
);
CREATE INDEX sessions_by_start ON sessions (started_at);
