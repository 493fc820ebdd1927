//! Tenant storage under concurrent use: deleting and re-creating a tenant while its data is
//! being read.
#![expect(
    clippy::disallowed_methods,
    reason = "these tests exercise the storage layer below the unit of work"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flowgate::config::DatabaseSettings;
use flowgate::tenancy::{Access, Databases, Slug};
use sea_orm::{ConnectionTrait as _, DbBackend, Statement};
use uuid::Uuid;

/// Users whose email is `marker` in the tenant, or `None` when the tenant cannot be read; the
/// transaction stays open for `hold` before the query, as a slow request's would.
async fn marked_users(dbs: &Databases, slug: &Slug, marker: &str, hold: Duration) -> Option<i64> {
    let tx = dbs.begin(slug, Access::Read).await.ok()?;
    tokio::time::sleep(hold).await;
    let row = tx
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT COUNT(*) AS n FROM users WHERE email = ?",
            [marker.into()],
        ))
        .await
        .ok()??;
    tx.commit().await.ok()?;
    row.try_get::<i64>("", "n").ok()
}

async fn sqlite(dir: &std::path::Path) -> Arc<Databases> {
    Arc::new(
        Databases::connect(&DatabaseSettings::Sqlite {
            control_file: dir.join("control.db"),
        })
        .await
        .unwrap(),
    )
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("flowgate-storage-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Deleting a SQLite tenant waits for its in-flight transactions without stopping any other
/// tenant: a slow request of the deleted tenant holds no lock the others need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_busy_sqlite_tenant_does_not_stall_the_others() {
    let dir = scratch_dir();
    let dbs = sqlite(&dir).await;
    let (busy, other) = (Slug::parse("busy").unwrap(), Slug::parse("other").unwrap());
    dbs.create_tenant_storage(&busy).await.unwrap();
    dbs.create_tenant_storage(&other).await.unwrap();

    let slow = dbs.begin(&busy, Access::Read).await.unwrap();
    let deleting = tokio::spawn({
        let (dbs, busy) = (Arc::clone(&dbs), busy.clone());
        async move { dbs.drop_tenant_storage(&busy).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !deleting.is_finished(),
        "the deletion waits for the open transaction"
    );
    let other_tx = tokio::time::timeout(Duration::from_secs(2), dbs.begin(&other, Access::Read))
        .await
        .expect("another tenant is served while the deletion waits")
        .unwrap();
    other_tx.commit().await.unwrap();
    assert!(
        dbs.begin(&busy, Access::Read).await.is_err(),
        "the tenant being deleted opens no new transaction"
    );

    let _ = slow.commit().await;
    tokio::time::timeout(Duration::from_secs(5), deleting)
        .await
        .expect("the deletion ends once its tenant's transactions have")
        .unwrap()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A SQLite tenant deleted while readers keep asking for it, then created again under the same
/// slug, is a new, empty tenant: no pool opened on the old file during the deletion survives
/// to serve the new tenant the old one's data (or to keep its migrations from running).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_re_created_sqlite_tenant_never_sees_the_deleted_ones_data() {
    let dir = scratch_dir();
    let dbs = sqlite(&dir).await;
    let slug = Slug::parse("racy").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let (dbs, slug, stop) = (Arc::clone(&dbs), slug.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = marked_users(&dbs, &slug, "none", Duration::from_millis(3)).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    for round in 0..20 {
        dbs.create_tenant_storage(&slug).await.unwrap();
        let marker = format!("round{round}@example.com");
        assert_eq!(
            marked_users(&dbs, &slug, &marker, Duration::ZERO).await,
            Some(0),
            "round {round}: the new tenant is empty and migrated"
        );
        let tx = dbs.begin(&slug, Access::Write).await.unwrap();
        tx.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO users (id, email, display_name, attributes, status, created_at, updated_at) \
             VALUES (?, ?, 'Marker', '{}', 'active', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            [Uuid::new_v4().into(), marker.clone().into()],
        ))
        .await
        .unwrap();
        tx.commit().await.unwrap();
        dbs.drop_tenant_storage(&slug).await.unwrap();
        dbs.create_tenant_storage(&slug).await.unwrap();
        assert_eq!(
            marked_users(&dbs, &slug, &marker, Duration::ZERO).await,
            Some(0),
            "round {round}: the re-created tenant shows the deleted one's data"
        );
        dbs.drop_tenant_storage(&slug).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// On PostgreSQL a tenant read is read-only and confined to the tenant's schema, set in the one
/// exchange after `BEGIN`; a write transaction of the same pool, taken right after, is not
/// read-only (the mode is the transaction's, not the connection's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_are_read_only_and_confined_and_writes_are_not() {
    let database = crate::helpers::TestDatabase::create().await;
    let dbs = Databases::connect(&DatabaseSettings::Postgres {
        url: database.url().into(),
        ca_file: None,
    })
    .await
    .unwrap();
    let slug = Slug::parse("confined").unwrap();
    dbs.create_tenant_storage(&slug).await.unwrap();
    let insert = |email: &str| {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO users (id, email, display_name, attributes, status, created_at, updated_at) \
             VALUES ($1, $2, 'Marker', '{}', 'active', now(), now())",
            [Uuid::new_v4().into(), email.into()],
        )
    };
    for _ in 0..3 {
        let read = dbs.begin(&slug, Access::Read).await.unwrap();
        let refused = read.execute_raw(insert("r@example.com")).await.unwrap_err();
        assert!(
            refused.to_string().contains("read-only"),
            "a read transaction refuses writes: {refused}"
        );
        drop(read);
        let write = dbs.begin(&slug, Access::Write).await.unwrap();
        let schema = write
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT current_schema() AS s",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<String>("", "s")
            .unwrap();
        assert_eq!(schema, slug.schema());
        write
            .execute_raw(insert(&format!("{}@example.com", Uuid::new_v4())))
            .await
            .unwrap();
        write.commit().await.unwrap();
    }
}
