//! The few administrative SQL statements start-up and the tests need on a server's maintenance
//! database: whether a database exists, creating one, renaming one.
//!
//! Each call opens a connection of its own and closes it before returning, so nothing stays
//! connected to a database that is about to be renamed or dropped. Nothing here knows the
//! application's schema.

use std::time::Duration;

/// Runs `work` on a connection to `config`'s server, then closes the connection and waits
/// until it is closed.
async fn with_admin_client<T>(
    config: &tokio_postgres::Config,
    work: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let result = work(&client).await;
    drop(client);
    let _ = connection.await;
    result
}

/// Whether the server has a database called `dbname`.
pub async fn database_exists(
    config: &tokio_postgres::Config,
    dbname: &str,
) -> Result<bool, tokio_postgres::Error> {
    with_admin_client(config, async |client| {
        let row = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
            .await?;
        Ok(row.is_some())
    })
    .await
}

/// Creates an empty database `dbname`, first dropping one of that name when `replace` is set.
pub async fn create_database(
    config: &tokio_postgres::Config,
    dbname: &str,
    replace: bool,
) -> Result<(), tokio_postgres::Error> {
    let name = quote_identifier(dbname);
    with_admin_client(config, async |client| {
        // Separate statements: DROP and CREATE DATABASE refuse to run in a transaction, which
        // is what several statements in one string would be.
        if replace {
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
        }
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
    })
    .await
}

/// Renames a database, waiting (up to a few seconds) for sessions that are still closing.
pub async fn rename_database(
    config: &tokio_postgres::Config,
    from: &str,
    to: &str,
) -> Result<(), tokio_postgres::Error> {
    let statement = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_identifier(from),
        quote_identifier(to)
    );
    with_admin_client(config, async |client| {
        let mut attempts = 0;
        loop {
            match client.batch_execute(&statement).await {
                Err(error)
                    if error.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                        && attempts < 50 =>
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                outcome => return outcome,
            }
        }
    })
    .await
}

/// Quotes an SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_identifier_doubles_its_quotes() {
        assert_eq!(quote_identifier("orders"), "\"orders\"");
        assert_eq!(
            quote_identifier("a\"; DROP DATABASE x; --"),
            "\"a\"\"; DROP DATABASE x; --\""
        );
    }
}
