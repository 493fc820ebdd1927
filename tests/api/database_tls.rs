//! PostgreSQL over TLS with certificate verification: `FLOWGATE_DATABASE_CA` makes every
//! connection verify the server's certificate (and its name) against that CA, and refuses a
//! server whose certificate does not chain to it.

use std::collections::HashMap;

use flowgate::app::AppState;
use flowgate::config::Settings;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait as _, Statement};

use crate::helpers::{Db, Options, POSTGRES_ADMIN_URL, TestDatabase, spawn_app_with};

/// The certificate the local PostgreSQL serves (it is its own CA: self-signed, `localhost`).
async fn server_certificate() -> String {
    let admin = sea_orm::Database::connect(POSTGRES_ADMIN_URL)
        .await
        .unwrap();
    let row = admin
        .query_one_raw(Statement::from_string(
            admin.get_database_backend(),
            "SELECT current_setting('ssl') AS ssl, current_setting('ssl_cert_file') AS cert",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get::<String>("", "ssl").unwrap(),
        "on",
        "the local PostgreSQL has TLS on"
    );
    row.try_get("", "cert").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_database_ca_every_connection_is_verified_tls() {
    let ca = server_certificate().await;
    let app = spawn_app_with(
        Db::Postgres,
        Options {
            vars: vec![("FLOWGATE_DATABASE_CA".into(), ca)],
            postgres_host: Some("localhost"),
            ..Options::default()
        },
    )
    .await;
    let (status, body) = app.get("/users", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (database, admin) = app.postgres_admin().await;
    let rows = admin
        .query_all_raw(Statement::from_string(
            admin.get_database_backend(),
            format!(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = '{database}'"
            ),
        ))
        .await
        .unwrap();
    let encrypted: Vec<bool> = rows.iter().map(|r| r.try_get("", "ssl").unwrap()).collect();
    assert!(!encrypted.is_empty(), "Flowgate has connections open");
    assert!(
        encrypted.iter().all(|e| *e),
        "every connection is TLS: {encrypted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_whose_certificate_does_not_chain_to_the_ca_is_refused() {
    flowgate::http::tls::install_crypto_provider();
    let database = TestDatabase::create().await;
    let data_dir = std::env::temp_dir().join(format!("flowgate-test-{}", uuid::Uuid::new_v4()));
    // Some other CA: a certificate that never signed PostgreSQL's.
    let other_ca = data_dir.join("other-ca.pem");
    std::fs::create_dir_all(&data_dir).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let vars: HashMap<String, String> = HashMap::from([
        ("FLOWGATE_DATA_DIR".into(), data_dir.display().to_string()),
        ("FLOWGATE_DATABASE_URL".into(), database.url_at("localhost")),
        (
            "FLOWGATE_DATABASE_CA".into(),
            other_ca.display().to_string(),
        ),
        ("FLOWGATE_OPERATOR_TOKEN".into(), "o".repeat(40)),
    ]);
    let settings = Settings::from_sources(None, &|name| vars.get(name).cloned()).unwrap();
    let error = match AppState::open(settings).await {
        Ok(_) => panic!("a server the CA did not certify is trusted"),
        Err(e) => format!("{e:#}").to_lowercase(),
    };
    assert!(
        error.contains("certificate") || error.contains("tls"),
        "{error}"
    );
    // The same database and CA setting without a CA mismatch opens: a positive control.
    let vars: HashMap<String, String> = HashMap::from([
        ("FLOWGATE_DATA_DIR".into(), data_dir.display().to_string()),
        ("FLOWGATE_DATABASE_URL".into(), database.url_at("localhost")),
        ("FLOWGATE_DATABASE_CA".into(), server_certificate().await),
        ("FLOWGATE_OPERATOR_TOKEN".into(), "o".repeat(40)),
    ]);
    let settings = Settings::from_sources(None, &|name| vars.get(name).cloned()).unwrap();
    assert!(AppState::open(settings).await.is_ok());
    let _ = std::fs::remove_dir_all(data_dir);
}
