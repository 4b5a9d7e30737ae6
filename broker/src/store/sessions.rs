//! Session records (live and WebDriver) in the store.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::Store;
use crate::domain::{Millis, SessionKind, SessionRecord};
use crate::error::Result;

fn session_from_row(r: &AnyRow) -> Result<SessionRecord> {
    let kind: String = r.try_get("kind")?;
    Ok(SessionRecord {
        id: r.try_get("id")?,
        kind: if kind == "webdriver" {
            SessionKind::WebDriver
        } else {
            SessionKind::Live
        },
        device_id: r.try_get("device_id")?,
        holder: r.try_get("holder")?,
        mode: r.try_get("mode")?,
        capabilities: r.try_get("capabilities")?,
        lease_id: r.try_get("lease_id")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        end_reason: r.try_get("end_reason")?,
    })
}

impl Store {
    pub async fn insert_session(&self, s: &SessionRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id, kind, device_id, holder, mode, capabilities, lease_id, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.id)
        .bind(s.kind.as_str())
        .bind(&s.device_id)
        .bind(&s.holder)
        .bind(&s.mode)
        .bind(&s.capabilities)
        .bind(s.lease_id.clone())
        .bind(s.started_at)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// Records the end of a session (the first end wins).
    pub async fn end_session(&self, id: &str, reason: &str, at: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL",
        )
        .bind(at)
        .bind(reason)
        .bind(id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// Sessions newest first, of one kind and one holder when those are not empty.
    pub async fn query_sessions(
        &self,
        kind: &str,
        holder: &str,
        limit: u32,
    ) -> Result<Vec<SessionRecord>> {
        let rows = sqlx::query(
            "SELECT id, kind, device_id, holder, mode, capabilities, lease_id, started_at, ended_at, end_reason
             FROM sessions WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR holder = $2)
             ORDER BY started_at DESC, id DESC LIMIT $3",
        )
        .bind(kind)
        .bind(holder)
        .bind(i64::from(limit.clamp(1, 10_000)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Sessions newest first.
    pub async fn list_sessions(&self, limit: u32) -> Result<Vec<SessionRecord>> {
        let rows = sqlx::query(
            "SELECT id, kind, device_id, holder, mode, capabilities, lease_id, started_at, ended_at, end_reason
             FROM sessions ORDER BY started_at DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit.clamp(1, 10_000)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }
}
