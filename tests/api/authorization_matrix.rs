//! Every operation of the OpenAPI document refuses a caller without credentials (401) and a
//! caller without the permission (403); only the declared public operations answer anyone.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::TestApp;
use crate::on_both_databases;

/// The only operations that need no credentials.
const PUBLIC: &[(&str, &str)] = &[("get", "/healthz"), ("get", "/readyz")];

struct Operation {
    method: Method,
    path: String,
    public: bool,
}

async fn operations(app: &TestApp) -> Vec<Operation> {
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"].as_str().unwrap().get(..3), Some("3.1"));
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let public = PUBLIC.contains(&(method.as_str(), path.as_str()));
            assert_eq!(
                !secured, public,
                "{method} {path}: only the declared public operations may go without security"
            );
            let concrete = path
                .replace("{tenant}", &app.tenant)
                .replace("{slug}", &app.tenant)
                .replace("{id}", &uuid::Uuid::new_v4().to_string());
            ops.push(Operation {
                method: method.to_uppercase().parse().unwrap(),
                path: concrete,
                public,
            });
        }
    }
    assert!(ops.len() >= 20, "the document lists every operation");
    ops
}

async fn send(app: &TestApp, op: &Operation, key: Option<&str>) -> StatusCode {
    let mut request = app.client.request(op.method.clone(), app.url(&op.path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if matches!(op.method, Method::POST | Method::PUT | Method::PATCH) {
        // Deliberately not valid JSON: authentication and authorization must answer first.
        request = request
            .header("content-type", "application/json")
            .body("{oops");
    }
    request.send().await.unwrap().status()
}

on_both_databases! {
    async fn every_operation_refuses_unauthenticated_callers(app) {
        for op in operations(&app).await.iter().filter(|op| !op.public) {
            assert_eq!(send(&app, op, None).await, StatusCode::UNAUTHORIZED, "{} {}", op.method, op.path);
        }
    }

    async fn every_tenant_operation_refuses_a_caller_without_the_permission(app) {
        let no_role = app.key_with_role(None).await;
        for op in operations(&app).await.iter().filter(|op| op.path.starts_with("/t/")) {
            assert_eq!(send(&app, op, Some(&no_role)).await, StatusCode::FORBIDDEN, "{} {}", op.method, op.path);
        }
    }

    async fn operator_operations_refuse_tenant_credentials(app) {
        for op in operations(&app).await.iter().filter(|op| !op.public && !op.path.starts_with("/t/")) {
            assert_eq!(send(&app, op, Some(&app.admin_key)).await, StatusCode::UNAUTHORIZED, "{} {}", op.method, op.path);
        }
    }

    async fn public_operations_answer_anyone(app) {
        for op in operations(&app).await.iter().filter(|op| op.public) {
            assert_eq!(send(&app, op, None).await, StatusCode::OK, "{} {}", op.method, op.path);
        }
    }

    async fn denied_calls_are_audited_with_the_action(app) {
        let viewer = app.key_with_role(Some("Viewer")).await;
        let (status, _) = app.post("/service-accounts", &viewer, serde_json::json!({"name": "nope"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let events = app.audit_events().await;
        let denied = events.iter().rev().find(|e| e["decision"] == "deny").expect("a denial event");
        assert_eq!(denied["action"], "service_account.create");
        assert_eq!(denied["status"], 403);
        assert_eq!(denied["actor_type"], "service_account");
        assert_eq!(denied["source_ip"], "127.0.0.1");
    }
}
