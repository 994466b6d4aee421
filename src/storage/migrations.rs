//! Schema migrations: the SQL files in `migrations/`, embedded in the binary and run by refinery.

use deadpool_postgres::Pool;

use super::StoreError;

refinery::embed_migrations!("migrations");

/// An arbitrary key for the advisory lock that serialises migrations. Two instances starting
/// at once would otherwise both try to create refinery's history table and the schema.
const MIGRATION_LOCK_KEY: i64 = 0x6f72_6465_7273; // "orders"

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a migration failed")]
    Refinery(#[from] refinery::Error),
}

impl From<tokio_postgres::Error> for MigrationError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Store(StoreError::from(error))
    }
}

/// Brings the schema up to date. Returns how many migrations were applied, so the first start
/// against an empty database can be told apart from later ones.
#[tracing::instrument(name = "migrations.run", skip_all)]
pub async fn run(pool: &Pool) -> Result<usize, MigrationError> {
    let mut client = pool.get().await.map_err(StoreError::from)?;
    // A migration may rewrite a large table or wait for a lock as long as it must: the serving
    // session's limits are lifted for it, and restored (to the connection's own) after.
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let report = migrations::runner().run_async(&mut **client).await;
    // Unlock even when a migration failed; the session lock would otherwise live as long as
    // the pooled connection.
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    client
        .batch_execute("RESET statement_timeout; RESET lock_timeout")
        .await?;
    let applied = report?.applied_migrations().len();
    Ok(applied)
}
