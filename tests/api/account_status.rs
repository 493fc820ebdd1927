//! Disabling and enabling service accounts and people: a disabled service account's credentials
//! of every kind stop working at once and come back when it is enabled; enabling needs
//! everything the account's roles give back; no one disables themselves or the break-glass
//! account; the automatic response `disable_service_account` does the same to an attacker.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, assert_problem, spawn_app};

/// An API key and an OAuth client of service account `account`: `(key, client_id, secret)`.
async fn credentials(app: &TestApp, account: &str) -> (String, String, String) {
    let (status, key) = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "k", "service_account_id": account}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let (status, client) = app
        .post(
            "/clients",
            &app.admin_key,
            json!({"name": "c", "service_account_id": account}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{client}");
    (
        key["key"].as_str().unwrap().to_owned(),
        client["client_id"].as_str().unwrap().to_owned(),
        client["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// The client-credentials grant: its status and, when granted, the access token.
async fn grant(app: &TestApp, client_id: &str, secret: &str) -> (StatusCode, Option<String>) {
    let response = app
        .client
        .post(app.url(&format!("/t/{}/auth/token", app.tenant)))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["access_token"].as_str().map(str::to_owned))
}

/// `POST {account}/disable` or `…/enable` (`change`) as `caller`.
async fn set_status(
    app: &TestApp,
    account: &str,
    caller: &str,
    change: &str,
) -> (StatusCode, Value) {
    app.call(Method::POST, &format!("{account}/{change}"), caller, None)
        .await
}

crate::on_both_databases! {
    async fn a_disabled_service_account_loses_every_credential_until_it_is_enabled(app) {
        let account = app.account_with_role(Some("Viewer")).await;
        let path = format!("/service-accounts/{account}");
        let (key, client_id, secret) = credentials(&app, &account).await;
        let (status, token) = grant(&app, &client_id, &secret).await;
        assert_eq!(status, StatusCode::OK);
        let token = token.unwrap();
        for credential in [&key, &token] {
            assert_eq!(app.get("/users", credential).await.0, StatusCode::OK);
        }

        let (status, body) = set_status(&app, &path, &app.admin_key, "disable").await;
        assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("disabled")), "{body}");
        for credential in [&key, &token] {
            let (status, body) = app.get("/users", credential).await;
            assert_problem(status, &body, StatusCode::UNAUTHORIZED, "invalid_credentials");
            assert!(!body.to_string().contains("disabled"), "the answer says no more than for any bad credential: {body}");
        }
        assert_eq!(grant(&app, &client_id, &secret).await, (StatusCode::UNAUTHORIZED, None));
        assert_eq!(app.get(&path, &app.admin_key).await.1["status"], "disabled");

        let events = app.audit_events().await;
        let change = events
            .iter()
            .find(|e| e["action"] == "service_account.disable")
            .expect("the change is on record");
        assert_eq!(change["resource_id"], account.as_str());
        assert_eq!((&change["details"]["status_before"], &change["details"]["status_after"]), (&json!("active"), &json!("disabled")));
        let refusals: Vec<&Value> = events
            .iter()
            .filter(|e| e["action"] == "auth.authenticate" && e["details"]["reason"] == "account_disabled")
            .collect();
        assert_eq!(refusals.len(), 2, "the key's and the token's: {refusals:?}");
        for refusal in refusals {
            // The trail says whose genuine credential is still in use; the caller was told nothing.
            assert_eq!((&refusal["actor_type"], &refusal["actor_id"]), (&json!("service_account"), &json!(account)));
            assert!(refusal["details"]["credential_id"].is_string(), "{refusal}");
        }

        let (status, body) = set_status(&app, &path, &app.admin_key, "enable").await;
        assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("active")), "{body}");
        assert_eq!(app.get("/users", &key).await.0, StatusCode::OK);
        assert_eq!(app.get("/users", &token).await.0, StatusCode::OK, "an unexpired token works again");
        assert_eq!(grant(&app, &client_id, &secret).await.0, StatusCode::OK);
    }

    async fn enabling_needs_what_the_account_gets_back_and_no_one_disables_themselves(app) {
        let (status, body) = app
            .post("/roles", &app.admin_key, json!({"name": "Account keeper",
                "actions": ["service_account.read", "service_account.disable", "user.read", "user.disable"]}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let keeper = app.key_with_role(Some("Account keeper")).await;
        let admin = app.account_with_role(Some("Admin")).await;
        let path = format!("/service-accounts/{admin}");

        // Taking access away needs nothing more than the action …
        let (status, body) = set_status(&app, &path, &keeper, "disable").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // … but giving an Admin's access back needs an Admin's access.
        let (status, body) = set_status(&app, &path, &keeper, "enable").await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        assert!(body["detail"].as_str().unwrap().contains("You cannot grant"), "{body}");
        assert_eq!(app.get(&path, &app.admin_key).await.1["status"], "disabled");
        let (status, _) = set_status(&app, &path, &app.admin_key, "enable").await;
        assert_eq!(status, StatusCode::OK);

        // The same for people.
        let person = app.create_user(&format!("p-{}@example.com", uuid::Uuid::new_v4().simple())).await;
        let (status, body) = app.post("/role-bindings", &app.admin_key,
            json!({"role": "Admin", "subject": {"type": "user", "id": person}, "scope": {"type": "tenant"}})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let person_path = format!("/users/{person}");
        let (status, body) = set_status(&app, &person_path, &keeper, "disable").await;
        assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("disabled")), "{body}");
        let (status, body) = set_status(&app, &person_path, &keeper, "enable").await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        let (status, body) = set_status(&app, &person_path, &app.admin_key, "enable").await;
        assert_eq!((status, body["status"].clone()), (StatusCode::OK, json!("active")), "{body}");

        // The caller's own account: refused, and nothing changes.
        let (_, me) = app.get("/me", &app.admin_key).await;
        let own = format!("/service-accounts/{}", me["id"].as_str().unwrap());
        let (status, body) = set_status(&app, &own, &app.admin_key, "disable").await;
        assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
        assert_eq!(app.get("/users", &app.admin_key).await.0, StatusCode::OK);

        // Holding user.update is not enough to disable people.
        let editor = app.key_with_role(Some("Admin")).await;
        let (status, body) = app.post("/roles", &app.admin_key, json!({"name": "Editor", "actions": ["user.read", "user.update"]})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let editor_only = app.key_with_role(Some("Editor")).await;
        let (status, body) = set_status(&app, &person_path, &editor_only, "disable").await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");

        // Unknown accounts, and another tenant's, are 404 and nothing changes.
        let (status, body) = set_status(&app, &format!("/service-accounts/{}", uuid::Uuid::new_v4()), &app.admin_key, "disable").await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
        let other = crate::helpers::unique_slug("other");
        let other_key = app.create_tenant(&other).await;
        let other_me = format!("/t/{other}/api/v1/me");
        let me_there = |key: String| {
            let request = app.client.get(app.url(&other_me)).bearer_auth(key);
            async move { request.send().await.unwrap() }
        };
        let foreign: Value = me_there(other_key.clone()).await.json().await.unwrap();
        let foreign = format!("/service-accounts/{}", foreign["id"].as_str().unwrap());
        let (status, body) = set_status(&app, &foreign, &editor, "disable").await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(me_there(other_key).await.status(), StatusCode::OK, "the other tenant's account works");
        assert_eq!(app.get(&path, &app.admin_key).await.1["status"], "active");
    }
}

/// The automatic response: a service account that reads secrets in a burst is disabled, so its
/// OAuth client's token stops working too, not only the key that read; an administrator
/// enables it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disable_service_account_response_stops_every_credential_of_the_account() {
    let app = spawn_app(Db::Sqlite).await;
    let (status, body) = app
        .call(
            Method::PUT,
            "/security/alerting",
            &app.admin_key,
            Some(
                json!({"secret_reads": {"threshold": 2, "window_seconds": 60,
                                         "responses": ["disable_service_account"]}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let account = app.account_with_role(Some("Admin")).await;
    let (key, client_id, secret) = credentials(&app, &account).await;
    let token = grant(&app, &client_id, &secret).await.1.unwrap();
    let (status, body) = app
        .post(
            "/secrets",
            &app.admin_key,
            json!({"name": "erp-token", "value": "s3cr3t"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for _ in 0..2 {
        let (status, body) = app.get("/secrets/erp-token/value", &key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mut refused = false;
    for _ in 0..50 {
        if app.get("/users", &token).await.0 == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "the account's token stops working, not only the key that read"
    );
    let path = format!("/service-accounts/{account}");
    assert_eq!(app.get(&path, &app.admin_key).await.1["status"], "disabled");
    let events = app.audit_events().await;
    let response = events
        .iter()
        .find(|e| e["action"] == "security.response")
        .expect("the response is on record");
    assert_eq!(response["details"]["response"], "disable_service_account");
    assert_eq!(response["resource_id"], account.as_str());
    assert_eq!(response["details"]["changed"], 1);

    let (status, _) = set_status(&app, &path, &app.admin_key, "enable").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.get("/users", &key).await.0, StatusCode::OK);
}

/// On PostgreSQL a disabled account's key stops working on every replica with the commit, though
/// the other replica had its status cached from a request a moment before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_reaches_every_replica_with_the_commit() {
    let app = spawn_app(Db::Postgres).await;
    let (replica, _server, _state) = app.replica().await;
    let account = app.account_with_role(Some("Viewer")).await;
    let (key, _, _) = credentials(&app, &account).await;
    let on_replica = || {
        app.client
            .get(format!("{replica}/t/{}/api/v1/users", app.tenant))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(on_replica().await.unwrap().status(), StatusCode::OK);
    let path = format!("/service-accounts/{account}");
    let (status, body) = set_status(&app, &path, &app.admin_key, "disable").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut refused = false;
    for _ in 0..20 {
        if on_replica().await.unwrap().status() == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        refused,
        "the replica forgot the account's status within half a second"
    );
}
