//! Tenant secrets: values in the key store, readable only with `secret.read`, resolved for
//! processes only with `secret.use`, rotated with a grace period, every access audited and no
//! value anywhere else; envelope encryption of fields under a per-tenant KEK that rotates online
//! and dies with the tenant.

use std::sync::Arc;
use std::time::Duration;

use entity::tenant::data_key;
use flowgate::authz::actions::{SecretRead, SecretWrite};
use flowgate::authz::schema::EntityKind;
use flowgate::keystore::{KeyName, Purpose};
use flowgate::secrets::envelope::{Envelope, Revealed};
use flowgate::secrets::resolver::{ResolveError, resolve};
use flowgate::tenancy::work::Change;
use reqwest::{Method, StatusCode};
use sea_orm::EntityTrait as _;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Db, TestApp, assert_problem, spawn_app};
use crate::on_both_databases;

async fn create(app: &TestApp, name: &str, value: &str) -> Value {
    let (status, body) = app
        .post(
            "/secrets",
            &app.admin_key,
            json!({"name": name, "value": value, "labels": {"system": "erp"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn value(app: &TestApp, key: &str, path: &str) -> (StatusCode, Value) {
    app.get(&format!("/secrets/{path}"), key).await
}

/// The files of the local key store that hold secret values of the app's tenant.
fn stored_values(app: &TestApp) -> usize {
    let dir = app
        .data_dir
        .join("keystore/tenants")
        .join(&app.tenant)
        .join("secret-value");
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

on_both_databases! {
    async fn secrets_are_created_read_rotated_with_grace_and_deleted(app) {
        let canary = format!("canary-{}", Uuid::new_v4().simple());
        let created = create(&app, "erp-token", &canary).await;
        assert!(!created.to_string().contains(&canary), "no value in the answer: {created}");
        assert_eq!(created["current_version"], 1);
        assert_eq!(created["labels"]["system"], "erp");
        assert_eq!(stored_values(&app), 1, "the value is in the key store, sealed");

        let (status, list) = app.get("/secrets", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["items"][0]["name"], "erp-token");
        assert_eq!(list["items"][0]["versions"][0]["version"], 1);
        assert!(!list.to_string().contains(&canary));

        let (status, read) = value(&app, &app.admin_key, "erp-token/value").await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(read, json!({"name": "erp-token", "version": 1, "value": canary}));

        // Rotation: version 2 is current, version 1 readable through its grace.
        let (status, rotated) = app
            .call(Method::PUT, "/secrets/erp-token", &app.admin_key, Some(json!({"value": "second", "grace_seconds": 3600})))
            .await;
        assert_eq!(status, StatusCode::OK, "{rotated}");
        assert_eq!(rotated["current_version"], 2);
        assert!(rotated["versions"][1]["readable_until"].is_string(), "{rotated}");
        assert_eq!(value(&app, &app.admin_key, "erp-token/value").await.1["value"], "second");
        let (status, old) = value(&app, &app.admin_key, "erp-token/value?version=1").await;
        assert_eq!((status, old["value"].as_str()), (StatusCode::OK, Some(canary.as_str())));

        // A rotation without grace ends version 2 at once; the next one destroys both old values.
        let (status, _) = app
            .call(Method::PUT, "/secrets/erp-token", &app.admin_key, Some(json!({"value": "third", "grace_seconds": 0})))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = value(&app, &app.admin_key, "erp-token/value?version=2").await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
        let (status, _) = app
            .call(Method::PUT, "/secrets/erp-token", &app.admin_key, Some(json!({"value": "fourth", "grace_seconds": 0})))
            .await;
        assert_eq!(status, StatusCode::OK);
        // Version 1 (an hour of grace left) and 4 remain; 2 and 3 are destroyed.
        assert_eq!(stored_values(&app), 2);
        let (_, meta) = app.get("/secrets/erp-token", &app.admin_key).await;
        let versions: Vec<i64> = meta["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
        assert_eq!(versions, [4, 1], "{meta}");

        // A deletion that cannot be recorded is not answered 204; no value is readable after
        // it, and deleting again completes it.
        crate::jose::break_audit(&app).await;
        let (status, _) = app.call(Method::DELETE, "/secrets/erp-token", &app.admin_key, None).await;
        assert!(status.is_server_error(), "{status}");
        crate::jose::heal_audit(&app).await;
        let (_, meta) = app.get("/secrets/erp-token", &app.admin_key).await;
        assert_eq!(meta["current_version"], 4, "the secret is still there: {meta}");
        for version in ["erp-token/value", "erp-token/value?version=1"] {
            let (status, body) = value(&app, &app.admin_key, version).await;
            assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
        }
        let (status, _) = app.call(Method::DELETE, "/secrets/erp-token", &app.admin_key, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(stored_values(&app), 0, "every version's value is destroyed");
        let (status, body) = value(&app, &app.admin_key, "erp-token/value").await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
        let (status, body) = app.call(Method::DELETE, "/secrets/erp-token", &app.admin_key, None).await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
    }

    async fn only_secret_read_sees_values_and_every_access_is_audited(app) {
        let canary = format!("canary-{}", Uuid::new_v4().simple());
        let secret = create(&app, "db.url", &canary).await;
        let operator = app.key_with_role(Some("Operator")).await;
        let nobody = app.key_with_role(None).await;

        // An Operator lists (names only) and may use, but not read.
        let (status, list) = app.get("/secrets", &operator).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        let (status, body) = value(&app, &operator, "db.url/value").await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        // Without a role: neither list nor read nor write.
        let (status, body) = app.get("/secrets", &nobody).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        let (status, body) = app
            .call(Method::PUT, "/secrets/db.url", &nobody, Some(json!({"value": "stolen"})))
            .await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        // A secret read on a binding scoped to the secret itself.
        let reader = app.key_with_role(None).await;
        let (_, me) = app.get("/me", &reader).await;
        let (status, body) = app
            .post(
                "/role-bindings",
                &app.admin_key,
                json!({"role": "Admin", "subject": {"type": "service_account", "id": me["id"]}, "scope": {"type": "secret", "id": secret["id"]}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, read) = value(&app, &reader, "db.url/value").await;
        assert_eq!((status, read["value"].as_str()), (StatusCode::OK, Some(canary.as_str())));

        // Another tenant's caller cannot see it, even as its admin.
        let other = crate::helpers::unique_slug("other");
        let other_key = app.create_tenant(&other).await;
        let response = app
            .client
            .get(app.url(&format!("/t/{other}/api/v1/secrets/db.url/value")))
            .bearer_auth(&other_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = app
            .client
            .get(app.tenant_url("/secrets/db.url/value"))
            .bearer_auth(&other_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        let events = app.audit_events().await;
        let trail = serde_json::to_string(&events).unwrap();
        assert!(!trail.contains(&canary), "no value in the audit trail");
        let reads: Vec<&Value> = events.iter().filter(|e| e["action"] == "secret.read").collect();
        assert!(reads.iter().any(|e| e["decision"] == "allow"
            && e["details"]["name"] == "db.url"
            && e["details"]["version"] == 1
            && e["resource_id"] == secret["id"]), "{reads:?}");
        assert!(reads.iter().any(|e| e["decision"] == "deny"), "denials are audited: {reads:?}");
        assert!(events.iter().any(|e| e["action"] == "secret.write" && e["status"] == 201));
    }

    async fn references_resolve_only_for_secret_use_and_each_use_is_audited(app) {
        let canary = format!("canary-{}", Uuid::new_v4().simple());
        create(&app, "erp-token", &canary).await;
        create(&app, "erp-user", "robot").await;

        let operator = app.work(app.worker(Some("Operator")).await).await;
        let resolved = resolve(&operator, "Basic ${secret:erp-user}:${secret:erp-token};").await.unwrap();
        assert_eq!(resolved.expose_secret(), format!("Basic robot:{canary};"));
        assert!(!format!("{resolved:?}").contains(&canary), "the result prints redacted");

        let viewer = app.work(app.worker(Some("Viewer")).await).await;
        let denied = resolve(&viewer, "${secret:erp-token}").await.unwrap_err();
        assert!(matches!(denied, ResolveError::Denied(ref n) if n == "erp-token"), "{denied}");
        assert!(!denied.to_string().contains(&canary));
        let unknown = resolve(&operator, "${secret:nope}").await.unwrap_err();
        assert!(matches!(unknown, ResolveError::Unknown(_)), "{unknown}");
        assert!(matches!(resolve(&operator, "${secret:erp-token").await, Err(ResolveError::Malformed(0))));

        let events = app.audit_events().await;
        assert!(!serde_json::to_string(&events).unwrap().contains(&canary));
        let uses: Vec<&Value> = events.iter().filter(|e| e["action"] == "secret.use").collect();
        assert_eq!(uses.iter().filter(|e| e["decision"] == "allow").count(), 2, "{uses:?}");
        assert!(uses.iter().any(|e| e["decision"] == "deny" && e["details"]["name"] == "erp-token"));
        assert!(uses.iter().all(|e| e["details"]["version"] == 1));
    }

    async fn a_permit_for_a_secret_is_worth_nothing_for_the_next_one_of_that_name(app) {
        // A writer decided on "erp" while it lived at the root; then "erp" is deleted and made
        // again: the handler's second lookup finds the new secret, which the permit never covered.
        let writer = app.work(app.worker(Some("Admin")).await).await;
        let old = create(&app, "erp", "v1").await;
        let old_id: Uuid = old["id"].as_str().unwrap().parse().unwrap();
        let resource = writer
            .policies()
            .resource_in(EntityKind::Secret, old_id.to_string(), None)
            .unwrap();
        let allowed = writer.authorize::<SecretWrite>(resource).unwrap();
        let (status, _) = app.call(Method::DELETE, "/secrets/erp", &app.admin_key, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let new = create(&app, "erp", "v2").await;
        let new_id: Uuid = new["id"].as_str().unwrap().parse().unwrap();

        let tx = writer.write(&allowed).await.unwrap();
        let found = flowgate::secrets::by_name(tx.conn(), "erp").await.unwrap().unwrap();
        assert_eq!(found.id, new_id);
        let rotated = flowgate::secrets::rotate(&tx, &allowed, found, Uuid::now_v7(), Duration::ZERO)
            .await
            .unwrap();
        assert!(rotated.is_none(), "rotated another secret than the one decided on");
        assert!(flowgate::secrets::delete(&tx, &allowed, new_id).await.unwrap().is_none());
        drop(tx);
        let (status, read) = value(&app, &app.admin_key, "erp/value").await;
        assert_eq!((status, read["value"].as_str()), (StatusCode::OK, Some("v2")));
    }

    async fn sealed_fields_survive_kek_rotation_and_die_with_the_tenant(app) {
        let admin = app.work(app.worker(Some("Admin")).await).await;
        let envelope: &Arc<Envelope> = admin.envelope();
        // Sealing happens inside a change (a process variable would be saved with it).
        let secret = create(&app, "holder", "x").await;
        let resource = admin
            .policies()
            .resource_in(EntityKind::Secret, secret["id"].as_str().unwrap().to_owned(), None)
            .unwrap();
        let allowed = admin.authorize::<SecretWrite>(resource.clone()).unwrap();
        let tx = admin.write(&allowed).await.unwrap();
        let sealed = envelope.seal(&admin, &tx, "iban", b"DE89 3704 0044 0532 0130 00").await.unwrap();
        tx.commit(Change::new("secret", secret["id"].as_str().unwrap(), 200)).await.unwrap();
        assert!(sealed.starts_with("fge1."), "{sealed}");
        assert!(!sealed.contains("DE89"));

        let shown = envelope.reveal::<SecretRead>(&admin, &resource, "iban", &sealed).await.unwrap();
        assert!(matches!(shown, Revealed::Plain(ref p) if p.expose_secret() == "DE89 3704 0044 0532 0130 00"));
        let viewer = app.work(app.worker(Some("Viewer")).await).await;
        let masked = envelope.reveal::<SecretRead>(&viewer, &resource, "iban", &sealed).await.unwrap();
        assert!(matches!(masked, Revealed::Masked));
        // Bound to its field, and tamper-evident.
        assert!(envelope.reveal::<SecretRead>(&admin, &resource, "bic", &sealed).await.is_err());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(envelope.reveal::<SecretRead>(&admin, &resource, "iban", &tampered).await.is_err());

        // Rotation: a new KEK version at once, the data keys re-wrapped in the background.
        let (status, before) = app.get("/encryption-key", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{before}");
        assert_eq!(before["data_keys"], 1);
        let (status, rotated) = app.post("/encryption-key/rotate", &app.admin_key, json!({})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{rotated}");
        assert_eq!(rotated["version"], before["version"].as_u64().unwrap() + 1);
        let mut status = rotated;
        for _ in 0..100 {
            if status["data_keys_current"] == status["data_keys"] && status["rewrapping"] == false {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            status = app.get("/encryption-key", &app.admin_key).await.1;
        }
        assert_eq!(status["data_keys_current"], 1, "{status}");
        let fresh = app.work(app.worker(Some("Admin")).await).await;
        fresh.envelope().forget_tenant(&app.tenant);
        let shown = fresh.envelope().reveal::<SecretRead>(&fresh, &resource, "iban", &sealed).await.unwrap();
        assert!(matches!(shown, Revealed::Plain(_)), "readable after the re-wrap");
        let nobody = app.key_with_role(Some("Operator")).await;
        let (status, body) = app.post("/encryption-key/rotate", &nobody, json!({})).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");

        // A backup of the tenant's rows: the wrapped data key. Deleting the tenant destroys its
        // KEK, and the backup no longer opens.
        let tx = fresh.read().await.unwrap();
        let backup = data_key::Entity::find().all(&tx).await.unwrap();
        tx.commit().await.unwrap();
        let kek = KeyName::new(&app.tenant, Purpose::DataKek);
        assert!(app.state.keystore.unwrap(&kek, &backup[0].wrapped).await.unwrap().is_some());
        let response = app
            .client
            .delete(app.url(&format!("/api/v1/platform/tenants/{}", app.tenant)))
            .bearer_auth(&app.operator_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(
            app.state.keystore.unwrap(&kek, &backup[0].wrapped).await.unwrap().is_none(),
            "crypto-shredded"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secret_input_is_refused_and_nothing_is_kept() {
    let app = spawn_app(Db::Sqlite).await;
    let cases = [
        (json!({"name": "a b", "value": "v"}), "name"),
        (json!({"name": "-lead", "value": "v"}), "name"),
        (json!({"name": "x".repeat(101), "value": "v"}), "name"),
        (json!({"name": "ok", "value": ""}), "value"),
        (
            json!({"name": "ok", "value": "v".repeat(64 * 1024 + 1)}),
            "value",
        ),
        (
            json!({"name": "ok", "value": "v", "labels": ["x"]}),
            "labels",
        ),
        (
            json!({"name": "ok", "value": "v", "labels": {"k": 1}}),
            "labels",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = app.post("/secrets", &app.admin_key, body.clone()).await;
        assert_problem(
            status,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert!(problem.to_string().contains(field), "{problem}");
    }
    let (status, problem) = app
        .post(
            "/secrets",
            &app.admin_key,
            json!({"name": "ok", "value": "v", "extra": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, problem) = app
        .post(
            "/secrets",
            &app.admin_key,
            json!({"name": "ok", "value": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let missing = Uuid::new_v4();
    let (status, problem) = app
        .post(
            "/secrets",
            &app.admin_key,
            json!({"name": "ok", "value": "v", "folder_id": missing}),
        )
        .await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(stored_values(&app), 0, "nothing kept for refused requests");

    create(&app, "taken", "first").await;
    let (status, problem) = app
        .post(
            "/secrets",
            &app.admin_key,
            json!({"name": "taken", "value": "second"}),
        )
        .await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "conflict");
    assert_eq!(
        stored_values(&app),
        1,
        "the refused value was destroyed again"
    );
    let (_, read) = value(&app, &app.admin_key, "taken/value").await;
    assert_eq!(read["value"], "first");
    let (status, problem) = app
        .call(
            Method::PUT,
            "/secrets/taken",
            &app.admin_key,
            Some(json!({"value": "v", "grace_seconds": 2_592_001})),
        )
        .await;
    assert_problem(
        status,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, _) = value(&app, &app.admin_key, "no%20such/value").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_a_folder_are_scoped_to_it() {
    let app = spawn_app(Db::Sqlite).await;
    let (_, folder) = app
        .post("/folders", &app.admin_key, json!({"name": "Finance"}))
        .await;
    let (_, other) = app
        .post("/folders", &app.admin_key, json!({"name": "HR"}))
        .await;
    let writer = app.key_with_role(None).await;
    let (_, me) = app.get("/me", &writer).await;
    let (status, body) = app
        .post(
            "/role-bindings",
            &app.admin_key,
            json!({"role": "Admin", "subject": {"type": "service_account", "id": me["id"]}, "scope": {"type": "folder", "id": folder["id"]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let in_folder = format!("/folders/{}/secrets", folder["id"].as_str().unwrap());
    let (status, created) = app
        .post(
            &in_folder,
            &writer,
            json!({"name": "bank-api", "value": "k"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["folder_id"], folder["id"]);
    let (status, read) = value(&app, &writer, "bank-api/value").await;
    assert_eq!(
        (status, read["value"].as_str()),
        (StatusCode::OK, Some("k"))
    );
    let elsewhere = format!("/folders/{}/secrets", other["id"].as_str().unwrap());
    let (status, body) = app
        .post(&elsewhere, &writer, json!({"name": "hr-api", "value": "k"}))
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = app
        .post("/secrets", &writer, json!({"name": "root", "value": "k"}))
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    // A folder holding a secret is not empty: 409, and the secret stays.
    let folder_path = format!("/folders/{}", folder["id"].as_str().unwrap());
    let (status, body) = app
        .call(Method::DELETE, &folder_path, &app.admin_key, None)
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, _) = value(&app, &app.admin_key, "bank-api/value").await;
    assert_eq!(status, StatusCode::OK);
    create(&app, "root-secret", "r").await;
    let (status, body) = value(&app, &writer, "root-secret/value").await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_rotates_a_tenant_key_and_rewraps_with_progress() {
    let app = spawn_app(Db::Sqlite).await;
    let admin = app.work(app.worker(Some("Admin")).await).await;
    let secret = create(&app, "holder", "x").await;
    let resource = admin
        .policies()
        .resource_in(
            EntityKind::Secret,
            secret["id"].as_str().unwrap().to_owned(),
            None,
        )
        .unwrap();
    let allowed = admin.authorize::<SecretWrite>(resource.clone()).unwrap();
    let tx = admin.write(&allowed).await.unwrap();
    let sealed = admin
        .envelope()
        .seal(&admin, &tx, "note", b"sealed before")
        .await
        .unwrap();
    tx.commit(Change::new("secret", secret["id"].as_str().unwrap(), 200))
        .await
        .unwrap();

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["keys", "rotate", &app.tenant])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&app.settings_vars)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("now at version 2"), "{stdout}");
    assert!(stdout.contains("re-wrapped 1/1 data key(s)"), "{stdout}");
    let (_, status) = app.get("/encryption-key", &app.admin_key).await;
    assert_eq!(
        (
            status["version"].as_u64(),
            status["data_keys_current"].as_u64()
        ),
        (Some(2), Some(1)),
        "{status}"
    );
    admin.envelope().forget_tenant(&app.tenant);
    let shown = admin
        .envelope()
        .reveal::<SecretRead>(&admin, &resource, "note", &sealed)
        .await
        .unwrap();
    assert!(matches!(shown, Revealed::Plain(ref p) if p.expose_secret() == "sealed before"));
    let events = app.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "encryption_key.rotate" && e["actor_type"] == "operator")
    );
    let unknown = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowgate"))
        .args(["keys", "rotate", "no-such-tenant"])
        .env_clear()
        .envs(&app.settings_vars)
        .output()
        .await
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}
