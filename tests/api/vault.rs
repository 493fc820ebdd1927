//! The Vault/OpenBao key store, against a real OpenBao dev server: tenant keys live in KV v2 and
//! transit, checkpoints are signed by transit, deletion destroys the keys, and an unreachable
//! Vault makes the service not ready.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Db, Options, TestApp, spawn_app_with, unique_slug};

/// An OpenBao dev server on a free port, stopped on drop.
struct OpenBao {
    child: Child,
    addr: String,
    token: String,
}

impl OpenBao {
    async fn start() -> OpenBao {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let token = format!("root-{}", uuid::Uuid::new_v4().simple());
        let child = Command::new("bao")
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`bao` is on PATH (scripts/test installs it)");
        let bao = OpenBao {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            token,
        };
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(format!("{}/v1/sys/health", bao.addr)).await
                && r.status().is_success()
            {
                return bao;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("OpenBao did not start");
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn spawn_with_vault(db: Db, bao: &OpenBao) -> TestApp {
    let vars = vec![
        ("FLOWGATE_KEYSTORE".to_string(), "vault".to_string()),
        ("FLOWGATE_VAULT_ADDR".to_string(), bao.addr.clone()),
        ("FLOWGATE_VAULT_TOKEN".to_string(), bao.token.clone()),
    ];
    spawn_app_with(
        db,
        Options {
            vars,
            ..Options::default()
        },
    )
    .await
}

async fn tenant_keys_live_in_vault_and_die_with_the_tenant(db: Db) {
    let bao = OpenBao::start().await;
    let app = spawn_with_vault(db, &bao).await;
    assert!(
        !app.data_dir.join("keystore").exists(),
        "no local key store with Vault configured"
    );
    let (status, _) = app.get("/users", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    let pepper_path = format!("secret/data/flowgate/tenants/{}/api-key-pepper", app.tenant);
    let (status, pepper) = bao.get(&pepper_path).await;
    assert_eq!(status, StatusCode::OK, "{pepper}");
    assert!(pepper["data"]["data"]["value"].is_string());
    // Checkpoints are signed by transit.
    app.state.audit.checkpoint_now().await.unwrap();
    let rows = app
        .tenant_rows("SELECT signature FROM audit_checkpoints")
        .await;
    assert!(!rows.is_empty());
    assert!(
        rows[0]["signature"]
            .as_str()
            .unwrap()
            .starts_with("vault:v1:"),
        "{rows:?}"
    );
    let (status, report) = app.get("/audit/verify", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], true, "{report}");
    let transit_key = format!("transit/keys/flowgate-t-{}-audit-signing", app.tenant);
    assert_eq!(bao.get(&transit_key).await.0, StatusCode::OK);
    // Deleting the tenant destroys both.
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/platform/tenants/{}", app.tenant)))
        .bearer_auth(&app.operator_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(bao.get(&pepper_path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(bao.get(&transit_key).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_keys_live_in_vault_and_die_with_the_tenant_on_sqlite() {
    tenant_keys_live_in_vault_and_die_with_the_tenant(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_keys_live_in_vault_and_die_with_the_tenant_on_postgres() {
    tenant_keys_live_in_vault_and_die_with_the_tenant(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_vault_is_down_the_service_is_not_ready_and_new_tenants_wait() {
    let mut bao = OpenBao::start().await;
    let app = spawn_with_vault(Db::Sqlite, &bao).await;
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    bao.stop();
    // A readiness answer is reused for a second (a flood of probes costs one check a second).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let response = app
        .client
        .post(app.url("/api/v1/platform/tenants"))
        .bearer_auth(&app.operator_token)
        .json(&serde_json::json!({"slug": unique_slug("later")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "dependency_unavailable");
    assert!(
        !body.to_string().contains(&bao.token),
        "the Vault token never leaks"
    );
    // The tenant API goes on where it needs no key (the pepper is cached, and checkpoints are
    // signed off the request path), and answers 503 where it does.
    let (status, _) = app.get("/users", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    let response = app
        .client
        .get(app.tenant_url("/audit/verify"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("retry-after").is_some());
}

#[test]
fn a_vault_key_store_needs_its_address_and_token() {
    let vars = std::collections::HashMap::from([
        ("FLOWGATE_KEYSTORE", "vault"),
        ("FLOWGATE_VAULT_ADDR", "http://127.0.0.1:1"),
    ]);
    let err =
        flowgate::config::Settings::from_sources(None, &|k| vars.get(k).map(|v| v.to_string()))
            .unwrap_err();
    assert!(err.to_string().starts_with("FLOWGATE_VAULT_TOKEN"), "{err}");
}
