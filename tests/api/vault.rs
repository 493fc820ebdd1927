//! The Vault/OpenBao key store, against a real OpenBao dev server: tenant keys live in KV v2 and
//! transit, checkpoints are signed by transit, deletion destroys the keys, and an unreachable
//! Vault makes the service not ready.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flowgate::config::VaultAuth;
use flowgate::keystore::{KeyName, KeyStore, LocalKeyStore, Purpose, VaultKeyStore};
use reqwest::StatusCode;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

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

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Freezes (`STOP`) or thaws (`CONT`) the server: unreachable, its data kept.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_live_in_vault_and_fail_closed_while_it_is_unreachable() {
    let bao = OpenBao::start().await;
    let app = spawn_with_vault(Db::Sqlite, &bao).await;
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let (status, created) = app
        .post(
            "/secrets",
            &app.admin_key,
            json!({"name": "erp-token", "value": canary}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let folder = format!(
        "secret/metadata/flowgate/tenants/{}/secret-value?list=true",
        app.tenant
    );
    let (status, listed) = bao.get(&folder).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let version_id = listed["data"]["keys"][0].as_str().unwrap().to_owned();
    let (_, stored) = bao
        .get(&format!(
            "secret/data/flowgate/tenants/{}/secret-value/{version_id}",
            app.tenant
        ))
        .await;
    assert!(
        stored["data"]["data"]["value"].is_string(),
        "the value is in KV v2: {stored}"
    );
    let (status, read) = app.get("/secrets/erp-token/value", &app.admin_key).await;
    assert_eq!(
        (status, read["value"].as_str()),
        (StatusCode::OK, Some(canary.as_str()))
    );
    // The tenant KEK is a transit key; rotating it adds a version there.
    let (status, rotated) = app
        .post("/encryption-key/rotate", &app.admin_key, json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{rotated}");
    assert_eq!(rotated["backend"], "vault");
    let kek = format!("transit/keys/flowgate-t-{}-data-kek", app.tenant);
    let (_, key) = bao.get(&kek).await;
    assert_eq!(key["data"]["latest_version"], rotated["version"], "{key}");

    // Vault stops answering: 503 with Retry-After, nothing written anywhere, no fallback.
    bao.signal("STOP");
    let response = app
        .client
        .post(app.tenant_url("/secrets"))
        .bearer_auth(&app.admin_key)
        .json(&json!({"name": "while-down", "value": canary}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("retry-after").is_some());
    let body = response.text().await.unwrap();
    assert!(
        !body.contains(&canary) && !body.contains(&bao.token),
        "{body}"
    );
    let (status, body) = app.get("/secrets/erp-token/value", &app.admin_key).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let rows = app.tenant_rows("SELECT name FROM secrets").await;
    assert_eq!(rows.len(), 1, "no row for the refused secret: {rows:?}");
    assert!(
        !app.data_dir.join("keystore").exists(),
        "no fallback to a local store"
    );
    // Back: service resumes by itself.
    bao.signal("CONT");
    let (status, body) = app
        .post(
            "/secrets",
            &app.admin_key,
            json!({"name": "after", "value": "v"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, read) = app.get("/secrets/erp-token/value", &app.admin_key).await;
    assert_eq!(
        (status, read["value"].as_str()),
        (StatusCode::OK, Some(canary.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_role_token_is_renewed_and_replaced_before_it_expires() {
    let bao = OpenBao::start().await;
    let (status, body) = bao
        .post("sys/auth/approle", json!({"type": "approle"}))
        .await;
    assert!(status.is_success(), "{body}");
    // The least-privilege policy the README documents, kept in deploy/.
    let policy = include_str!("../../deploy/vault-policy.hcl");
    let (status, body) = bao
        .post("sys/policies/acl/flowgate", json!({"policy": policy}))
        .await;
    assert!(status.is_success(), "{body}");
    bao.post("sys/mounts/transit", json!({"type": "transit"}))
        .await;
    // Tokens live 4 s and can be renewed up to 8 s: the session must renew, then log in again.
    let (status, body) = bao
        .post(
            "auth/approle/role/flowgate",
            json!({"token_policies": ["flowgate"], "token_ttl": "4s", "token_max_ttl": "8s"}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (_, role) = bao.get("auth/approle/role/flowgate/role-id").await;
    let (_, secret) = bao
        .post("auth/approle/role/flowgate/secret-id", json!({}))
        .await;
    let role_id = role["data"]["role_id"].as_str().unwrap().to_owned();
    let secret_id = secret["data"]["secret_id"].as_str().unwrap().to_owned();
    let vars = vec![
        ("FLOWGATE_KEYSTORE".to_string(), "vault".to_string()),
        ("FLOWGATE_VAULT_ADDR".to_string(), bao.addr.clone()),
        ("FLOWGATE_VAULT_ROLE_ID".to_string(), role_id),
        ("FLOWGATE_VAULT_SECRET_ID".to_string(), secret_id.clone()),
    ];
    let app = spawn_app_with(
        Db::Sqlite,
        Options {
            vars,
            ..Options::default()
        },
    )
    .await;
    for i in 0..14 {
        let (status, body) = app
            .post(
                "/secrets",
                &app.admin_key,
                json!({"name": format!("s{i}"), "value": "v"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "after {i} s: {body}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (status, body) = app.get("/secrets/s0/value", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Everything else Flowgate does with Vault passes under the policy too: rotating a secret
    // and the tenant's KEK, deleting a secret, and deleting the tenant with all its keys.
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/secrets/s0",
            &app.admin_key,
            Some(json!({"value": "w"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/encryption-key/rotate",
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = app
        .call(reqwest::Method::DELETE, "/secrets/s1", &app.admin_key, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/platform/tenants/{}", app.tenant)))
        .bearer_auth(&app.operator_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, keys) = bao.get("transit/keys?list=true").await;
    let prefix = format!("flowgate-t-{}-", app.tenant);
    assert!(
        status == StatusCode::NOT_FOUND
            || !keys["data"]["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k.as_str().unwrap().starts_with(&prefix)),
        "{keys}"
    );
}

/// The key-store contract, the same for every backend: create-once records, wrapping under a
/// versioned key that rotates and re-wraps, nothing opening across tenants or after destruction.
async fn key_store_contract(store: &dyn KeyStore) {
    let tenant = unique_slug("contract");
    let other = unique_slug("contract");
    let record = KeyName::new(&tenant, Purpose::PayloadEncryption);
    assert_eq!(store.record(&record).await.unwrap(), None);
    assert_eq!(
        store.create_record(&record, b"first").await.unwrap(),
        b"first"
    );
    assert_eq!(
        store.create_record(&record, b"second").await.unwrap(),
        b"first",
        "create-once"
    );
    let item = KeyName::item(&tenant, Purpose::SecretValue, &uuid::Uuid::new_v4());
    store.put_record(&item, b"value").await.unwrap();
    assert_eq!(
        store.record(&item).await.unwrap().as_deref(),
        Some(&b"value"[..])
    );

    let kek = KeyName::new(&tenant, Purpose::DataKek);
    assert_eq!(store.wrapping_version(&kek).await.unwrap(), None);
    let wrapped = store.wrap(&kek, b"data key").await.unwrap();
    assert_eq!(
        flowgate::keystore::wrapped_version(&wrapped),
        Some(1),
        "{wrapped}"
    );
    assert!(!wrapped.contains("data key"));
    let open = store.unwrap(&kek, &wrapped).await.unwrap().unwrap();
    assert_eq!(open.expose_secret(), b"data key");
    let foreign = KeyName::new(&other, Purpose::DataKek);
    store.wrap(&foreign, b"x").await.unwrap();
    assert!(
        store.unwrap(&foreign, &wrapped).await.unwrap().is_none(),
        "another tenant's key"
    );
    assert!(store.unwrap(&kek, "garbage").await.unwrap().is_none());

    assert_eq!(store.rotate_wrapping_key(&kek).await.unwrap(), 2);
    assert_eq!(store.wrapping_version(&kek).await.unwrap(), Some(2));
    assert!(
        store.unwrap(&kek, &wrapped).await.unwrap().is_some(),
        "old versions still open"
    );
    let rewrapped = store.rewrap(&kek, &wrapped).await.unwrap().unwrap();
    assert_eq!(flowgate::keystore::wrapped_version(&rewrapped), Some(2));
    assert_eq!(
        store
            .unwrap(&kek, &rewrapped)
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        b"data key"
    );

    store.destroy_tenant(&tenant).await.unwrap();
    store.forget(&tenant);
    assert!(
        store.unwrap(&kek, &rewrapped).await.unwrap().is_none(),
        "destroyed with the tenant"
    );
    assert_eq!(store.record(&item).await.unwrap(), None);
    assert_eq!(store.record(&record).await.unwrap(), None);
    assert!(
        store
            .unwrap(&foreign, &store.wrap(&foreign, b"y").await.unwrap())
            .await
            .unwrap()
            .is_some(),
        "other tenants untouched"
    );
    store.destroy_tenant(&other).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_key_stores_keep_the_same_contract() {
    let dir = std::env::temp_dir().join(format!(
        "flowgate-contract-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let local = LocalKeyStore::open(&dir, None).unwrap();
    key_store_contract(&local).await;
    let _ = std::fs::remove_dir_all(&dir);

    let bao = OpenBao::start().await;
    let vault = VaultKeyStore::connect(
        &bao.addr,
        VaultAuth::Token(bao.token.clone().into()),
        "secret",
        "transit",
    )
    .await
    .unwrap();
    key_store_contract(&vault).await;
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
