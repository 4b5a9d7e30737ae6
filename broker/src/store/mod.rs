//! The database: one store over SQLite or PostgreSQL (sqlx `Any`), with migrations per backend.
//!
//! Every write that must be atomic is one transaction here. No double-booking is
//! enforced by the partial unique index `leases_one_active_per_device`.

mod migrations;
mod rows;
mod sessions;

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::any::{Any, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{AnyConnection, AnyPool};
use sqlx::{Connection, Executor, Row};

use crate::domain::{Caller, Device, EndReason, Lease, Millis, Node, Presence, Role};
use crate::error::{Error, Result};
use rows::{device_from_row, lease_from_row};

/// Which SQL dialect the store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The broker's storage handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: the one connection every write goes through (`None` once closed).
    ///
    /// SQLite takes one writer at a time anyway, and the fleet writes one decision
    /// at a time. A pooled connection costs each write a ping on its way back to
    /// the pool, and rotating over the pool's connections makes each one drop its
    /// page cache because another one wrote since it last ran; one long-lived
    /// connection keeps its cache warm. Reads still use the pool.
    writer: Option<Arc<tokio::sync::Mutex<Option<AnyConnection>>>>,
}

/// The connection a write runs on: SQLite's dedicated writer, or one from the pool.
enum WriteConn<'a> {
    Dedicated(tokio::sync::MappedMutexGuard<'a, AnyConnection>),
    Pooled(PoolConnection<Any>),
}

impl Deref for WriteConn<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            WriteConn::Dedicated(c) => c,
            WriteConn::Pooled(c) => c,
        }
    }
}

impl DerefMut for WriteConn<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            WriteConn::Dedicated(c) => c,
            WriteConn::Pooled(c) => c,
        }
    }
}

/// A new lease to insert; the store assigns its fencing token.
#[derive(Debug, Clone)]
pub struct NewLease {
    pub id: String,
    pub device_id: String,
    pub holder: String,
    pub created_at: Millis,
    pub ttl_ms: i64,
}

/// Which leases `list_leases` returns.
#[derive(Debug, Clone, Default)]
pub struct LeaseQuery {
    pub include_ended: bool,
    pub device_id: Option<String>,
    pub holder: Option<String>,
    pub limit: u32,
}

/// One presence change, recorded in `device_history`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub device_id: String,
    pub presence: Presence,
    pub at: Millis,
    pub node_id: String,
}

const LEASE_COLUMNS: &str = "id, device_id, holder, created_at, expires_at, ttl_ms, fencing_token, state, end_reason, ended_at";

impl Store {
    /// The SQLite URL for a data directory (the file is created when missing).
    pub fn sqlite_url(data_dir: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", data_dir.join("farm.db").display())
    }

    /// Connects, prepares the connection (WAL for SQLite) and runs pending migrations.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::invalid_argument(format!(
                "unsupported database url {url:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DB"
            )));
        };
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            // An embedded SQLite file cannot drop a connection: pinging it before
            // every use only adds a round trip to its worker thread to each query.
            .test_before_acquire(backend != Backend::Sqlite)
            .acquire_timeout(std::time::Duration::from_secs(10));
        let options = if backend == Backend::Sqlite {
            options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
                        .await?;
                    Ok(())
                })
            })
        } else {
            options
        };
        let pool = options.connect(url).await.map_err(|e| {
            Error::unavailable(format!("cannot open database {}: {e}", redact(url)))
        })?;
        migrations::run(&pool, backend).await?;
        // PostgreSQL connections can break and must come from the pool, which replaces them.
        let writer = if backend == Backend::Sqlite {
            let conn = pool.acquire().await?.detach();
            Some(Arc::new(tokio::sync::Mutex::new(Some(conn))))
        } else {
            None
        };
        Ok(Store {
            pool,
            backend,
            writer,
        })
    }

    /// A connection for a write (see `Store::writer`).
    async fn writer(&self) -> Result<WriteConn<'_>> {
        if let Some(writer) = &self.writer {
            let guard = writer.lock().await;
            return match tokio::sync::MutexGuard::try_map(guard, Option::as_mut) {
                Ok(conn) => Ok(WriteConn::Dedicated(conn)),
                Err(_) => Err(Error::unavailable("the database is closed")),
            };
        }
        Ok(WriteConn::Pooled(self.pool.acquire().await?))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool and the writer (pending queries finish first).
    pub async fn close(&self) {
        if let Some(writer) = &self.writer
            && let Some(conn) = writer.lock().await.take()
        {
            let _ = conn.close().await;
        }
        self.pool.close().await;
    }

    // ------------------------------------------------------------------ tokens

    pub async fn insert_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        now: Millis,
    ) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO tokens (name, role, token_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(hash)
        .bind(now)
        .execute(&mut *self.writer().await?)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::already_exists(
                format!("a token named {name:?} already exists: pick another --name"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<Caller>> {
        let row = sqlx::query("SELECT name, role FROM tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => None,
            Some(row) => {
                let role: String = row.try_get("role")?;
                Role::parse(&role).map(|role| Caller {
                    name: row.try_get("name").unwrap_or_default(),
                    role,
                })
            }
        })
    }

    // ------------------------------------------------------------------- nodes

    pub async fn upsert_node(&self, node: &Node, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (id, site, version, hostname, last_seen_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET site = excluded.site, version = excluded.version,
             hostname = excluded.hostname, last_seen_at = excluded.last_seen_at",
        )
        .bind(&node.id)
        .bind(&node.site)
        .bind(&node.version)
        .bind(&node.hostname)
        .bind(now)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    // ----------------------------------------------------------------- devices

    pub async fn load_devices(&self) -> Result<Vec<Device>> {
        let rows = sqlx::query(
            "SELECT id, serial, node_id, site, platform, model, manufacturer, android_version, sdk,
                    screen_width, screen_height, density, battery_level, tags, presence, state_since
             FROM devices ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_from_row).collect()
    }

    /// Writes devices (insert or update) and their presence changes in one transaction.
    pub async fn save_devices(&self, devices: &[Device], history: &[HistoryEntry]) -> Result<()> {
        if devices.is_empty() && history.is_empty() {
            return Ok(());
        }
        let mut conn = self.writer().await?;
        let mut tx = conn.begin().await?;
        for d in devices {
            let tags = serde_json::to_string(&d.tags).unwrap_or_else(|_| "[]".into());
            sqlx::query(
                "INSERT INTO devices (id, serial, node_id, site, platform, model, manufacturer, android_version,
                    sdk, screen_width, screen_height, density, battery_level, tags, presence, state_since)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                 ON CONFLICT (id) DO UPDATE SET serial = excluded.serial, node_id = excluded.node_id,
                    site = excluded.site, platform = excluded.platform, model = excluded.model,
                    manufacturer = excluded.manufacturer, android_version = excluded.android_version,
                    sdk = excluded.sdk, screen_width = excluded.screen_width, screen_height = excluded.screen_height,
                    density = excluded.density, battery_level = excluded.battery_level, tags = excluded.tags,
                    presence = excluded.presence, state_since = excluded.state_since",
            )
            .bind(&d.id)
            .bind(&d.serial)
            .bind(&d.node_id)
            .bind(&d.site)
            .bind(&d.platform)
            .bind(&d.model)
            .bind(&d.manufacturer)
            .bind(&d.android_version)
            .bind(i64::from(d.sdk))
            .bind(i64::from(d.screen_width))
            .bind(i64::from(d.screen_height))
            .bind(i64::from(d.density))
            .bind(i64::from(d.battery_level))
            .bind(tags)
            .bind(d.presence.as_str())
            .bind(d.state_since)
            .execute(&mut *tx)
            .await?;
        }
        for h in history {
            sqlx::query("INSERT INTO device_history (device_id, presence, at, node_id) VALUES ($1, $2, $3, $4)")
                .bind(&h.device_id)
                .bind(h.presence.as_str())
                .bind(h.at)
                .bind(&h.node_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn device_history(&self, device_id: &str) -> Result<Vec<HistoryEntry>> {
        let rows = sqlx::query(
            "SELECT device_id, presence, at, node_id FROM device_history WHERE device_id = $1 ORDER BY id",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let presence: String = r.try_get("presence")?;
                Ok(HistoryEntry {
                    device_id: r.try_get("device_id")?,
                    presence: Presence::parse(&presence).ok_or_else(|| {
                        Error::internal(format!("bad presence {presence:?} in device_history"))
                    })?,
                    at: r.try_get("at")?,
                    node_id: r.try_get("node_id")?,
                })
            })
            .collect()
    }

    // ------------------------------------------------------------------ leases

    /// Takes the lease in one statement (atomic on its own): the fencing token is
    /// the device's counter + 1, and a trigger moves the counter with it. A second
    /// active lease on the device violates the unique index and fails with
    /// `FailedPrecondition`, whatever the caller believed.
    pub async fn create_lease(&self, new: &NewLease) -> Result<Lease> {
        let expires_at = new.created_at + new.ttl_ms;
        let inserted = sqlx::query(
            "INSERT INTO leases (id, device_id, holder, created_at, expires_at, ttl_ms, fencing_token, state)
             SELECT $1, id, $2, $3, $4, $5, fencing_counter + 1, 'active' FROM devices WHERE id = $6
             RETURNING fencing_token",
        )
        .bind(&new.id)
        .bind(&new.holder)
        .bind(new.created_at)
        .bind(expires_at)
        .bind(new.ttl_ms)
        .bind(&new.device_id)
        .fetch_optional(&mut *self.writer().await?)
        .await;
        let row = match inserted {
            Ok(Some(row)) => row,
            Ok(None) => {
                return Err(Error::not_found(format!(
                    "device {:?} not found: `farmctl devices` lists the farm",
                    new.device_id
                )));
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(Error::failed_precondition(format!(
                    "device {} already has an active lease",
                    new.device_id
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let fencing: i64 = row.try_get("fencing_token")?;
        Ok(Lease {
            id: new.id.clone(),
            device_id: new.device_id.clone(),
            holder: new.holder.clone(),
            created_at: new.created_at,
            expires_at,
            ttl_ms: new.ttl_ms,
            fencing_token: fencing as u64,
            state: crate::domain::LeaseState::Active,
            end_reason: None,
            ended_at: None,
        })
    }

    /// Moves an active lease's expiry; `None` when the lease is not active.
    pub async fn renew_lease(
        &self,
        id: &str,
        expires_at: Millis,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        let sql = format!(
            "UPDATE leases SET expires_at = $1, ttl_ms = $2 WHERE id = $3 AND state = 'active' RETURNING {LEASE_COLUMNS}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(expires_at)
            .bind(ttl_ms)
            .bind(id)
            .fetch_optional(&mut *self.writer().await?)
            .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    /// Ends the given leases that are still active; returns those it ended.
    pub async fn end_leases(
        &self,
        ids: &[String],
        reason: EndReason,
        at: Millis,
    ) -> Result<Vec<Lease>> {
        let mut ended = Vec::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(ended);
        }
        let sql = format!(
            "UPDATE leases SET state = 'ended', end_reason = $1, ended_at = $2
             WHERE id = $3 AND state = 'active' RETURNING {LEASE_COLUMNS}"
        );
        if let [id] = ids {
            // One statement is atomic on its own: no BEGIN/COMMIT round trips (the common release).
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(reason.as_str())
                .bind(at)
                .bind(id)
                .fetch_optional(&mut *self.writer().await?)
                .await?;
            if let Some(row) = row {
                ended.push(lease_from_row(&row)?);
            }
            return Ok(ended);
        }
        let mut conn = self.writer().await?;
        let mut tx = conn.begin().await?;
        for id in ids {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(reason.as_str())
                .bind(at)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = row {
                ended.push(lease_from_row(&row)?);
            }
        }
        tx.commit().await?;
        Ok(ended)
    }

    pub async fn get_lease(&self, id: &str) -> Result<Option<Lease>> {
        let sql = format!("SELECT {LEASE_COLUMNS} FROM leases WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    pub async fn load_active_leases(&self) -> Result<Vec<Lease>> {
        self.list_leases(&LeaseQuery {
            include_ended: false,
            limit: u32::MAX,
            ..Default::default()
        })
        .await
    }

    /// Leases newest first: the active ones, and the ended ones too when asked.
    pub async fn list_leases(&self, q: &LeaseQuery) -> Result<Vec<Lease>> {
        let sql = format!(
            "SELECT {LEASE_COLUMNS} FROM leases
             WHERE ($1 = 1 OR state = 'active') AND ($2 = '' OR device_id = $2) AND ($3 = '' OR holder = $3)
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let limit = if q.limit == 0 {
            100
        } else {
            i64::from(q.limit)
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(q.include_ended))
            .bind(q.device_id.clone().unwrap_or_default())
            .bind(q.holder.clone().unwrap_or_default())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(lease_from_row).collect()
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
