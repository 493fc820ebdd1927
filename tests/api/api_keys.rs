//! API keys: shown once, stored as keyed hashes, refused when revoked, expired or forged; a
//! Viewer's key reads but does not write.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::assert_problem;
use crate::on_both_databases;

on_both_databases! {
    async fn a_viewer_lists_users_but_cannot_create_one_and_an_admin_can(app) {
        let viewer = app.key_with_role(Some("Viewer")).await;
        let (status, _) = app.get("/users", &viewer).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = app.post("/users", &viewer, json!({"email": "eve@example.com", "display_name": "Eve"})).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        let (status, body) = app.post("/users", &app.admin_key, json!({"email": "eve@example.com", "display_name": "Eve"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, list) = app.get("/users", &viewer).await;
        assert_eq!(status, StatusCode::OK);
        assert!(list["items"].as_array().unwrap().iter().any(|u| u["id"] == body["id"]));
    }

    async fn a_revoked_key_stops_working_at_once(app) {
        let name = format!("sa-{}", uuid::Uuid::new_v4().simple());
        let (_, account) = app.post("/service-accounts", &app.admin_key, json!({"name": name})).await;
        let (status, issued) = app.post("/api-keys", &app.admin_key,
            json!({"name": "to revoke", "service_account_id": account["id"]})).await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
        let key = issued["key"].as_str().unwrap();
        let id = issued["id"].as_str().unwrap();
        // A key without bindings authenticates (403 is an authorization answer) …
        let (status, _) = app.get("/users", key).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app.call(Method::DELETE, &format!("/api-keys/{id}"), &app.admin_key, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        // … and after revocation it does not.
        let (status, body) = app.get("/users", key).await;
        assert_problem(status, &body, StatusCode::UNAUTHORIZED, "invalid_credentials");
        let (_, list) = app.get("/api-keys", &app.admin_key).await;
        let listed = list["items"].as_array().unwrap().iter().find(|k| k["id"] == id).unwrap().clone();
        assert!(listed["revoked_at"].is_string());
        assert!(listed.get("key").is_none(), "listing never shows keys");
        assert!(!list.to_string().contains(key));
    }

    async fn an_expired_key_is_refused(app) {
        let name = format!("sa-{}", uuid::Uuid::new_v4().simple());
        let (_, account) = app.post("/service-accounts", &app.admin_key, json!({"name": name})).await;
        let (status, body) = app.post("/api-keys", &app.admin_key,
            json!({"name": "past", "service_account_id": account["id"], "expires_at": "2020-01-01T00:00:00Z"})).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
        let (status, issued) = app.post("/api-keys", &app.admin_key,
            json!({"name": "soon", "service_account_id": account["id"], "expires_at": soon})).await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
        let key = issued["key"].as_str().unwrap();
        let (status, _) = app.get("/users", key).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "valid until it expires");
        tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
        let (status, body) = app.get("/users", key).await;
        assert_problem(status, &body, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }

    async fn forged_and_malformed_keys_are_refused(app) {
        let real = &app.admin_key;
        // Same lookup id, different secret: the keyed hash does not match.
        let mut forged = real.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        let random = format!("fgk_{}", "A".repeat(59));
        for key in [forged.as_str(), random.as_str(), "fgk_", "not-a-key", &format!("{real}x")] {
            let (status, body) = app.get("/users", key).await;
            assert_problem(status, &body, StatusCode::UNAUTHORIZED, "invalid_credentials");
        }
        let no_scheme = app.client.get(app.tenant_url("/users")).header("authorization", real.as_str()).send().await.unwrap();
        assert_eq!(no_scheme.status(), StatusCode::UNAUTHORIZED);
        let missing = app.client.get(app.tenant_url("/users")).send().await.unwrap();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.headers()["www-authenticate"], r#"Bearer realm="flowgate""#);
        // Failed authentications are security events in the audit trail, without the key.
        let events = app.audit_events().await;
        let failures: Vec<_> = events.iter().filter(|e| e["action"] == "auth.authenticate").collect();
        assert!(failures.iter().any(|e| e["details"]["reason"] == "wrong_secret"));
        assert!(failures.iter().any(|e| e["details"]["reason"] == "missing_credentials"));
        assert!(!serde_json::to_string(&events).unwrap().contains(&forged));
    }

    async fn keys_are_stored_only_as_keyed_hashes(app) {
        let key = app.key_with_role(Some("Viewer")).await;
        let (lookup, secret) = key["fgk_".len()..].split_at(16);
        let rows = app.tenant_rows(&format!("SELECT * FROM api_keys WHERE lookup = '{lookup}'")).await;
        assert_eq!(rows.len(), 1);
        let row = serde_json::to_string(&rows[0]).unwrap();
        assert!(!row.contains(secret), "{row}");
        let hash = rows[0]["secret_hash"].as_str().unwrap();
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, flowgate::crypto::sha256_hex(key.as_bytes()), "a plain hash would be guessable offline");
        let (status, list) = app.get("/api-keys", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!list.to_string().contains(secret));
    }

    async fn an_issued_key_must_belong_to_a_service_account_of_the_tenant(app) {
        let (status, body) = app.post("/api-keys", &app.admin_key,
            json!({"name": "x", "service_account_id": uuid::Uuid::new_v4()})).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(body["errors"][0]["field"], "service_account_id");
    }
}
