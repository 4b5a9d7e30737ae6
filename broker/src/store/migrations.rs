//! The embedded migrations, one folder per backend (broker/migrations/{sqlite,postgres}).

use std::borrow::Cow;

use sqlx::AnyPool;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::Backend;
use crate::error::{Error, Result};

/// (version, description, SQL) for each backend; both lists move in step.
const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "sessions",
        include_str!("../../migrations/sqlite/0002_sessions.sql"),
    ),
    (
        3,
        "fencing trigger",
        include_str!("../../migrations/sqlite/0003_fencing_trigger.sql"),
    ),
];
const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "sessions",
        include_str!("../../migrations/postgres/0002_sessions.sql"),
    ),
    (
        3,
        "fencing trigger",
        include_str!("../../migrations/postgres/0003_fencing_trigger.sql"),
    ),
];

pub(super) async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    let list = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    let migrations = list
        .iter()
        .map(|&(version, name, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(name),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
        .run(pool)
        .await
        .map_err(|e| Error::unavailable(format!("database migration failed: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_backends_have_the_same_migrations() {
        let versions = |list: &[(i64, &'static str, &'static str)]| {
            list.iter().map(|m| (m.0, m.1)).collect::<Vec<_>>()
        };
        assert_eq!(versions(super::SQLITE), versions(super::POSTGRES));
    }
}
