//! Migrations: safe when instances start at once.

use futures::future::join;
use orders::storage::{self, migrations};

use crate::helpers::unmigrated_database;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_migrating_one_database_at_once_both_succeed() {
    let database = unmigrated_database().await;
    let first = storage::connect_pool(database.config().clone(), 1);
    let second = storage::connect_pool(database.config().clone(), 1);

    let (first, second) = join(migrations::run(&first), migrations::run(&second)).await;

    let mut applied = [first.unwrap(), second.unwrap()];
    applied.sort();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(
        applied,
        [0, migrations],
        "one applied the schema, the other found it done"
    );
}
