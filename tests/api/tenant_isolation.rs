//! Tenants cannot see each other: another tenant's key never gets a 2xx, and another tenant's
//! ids are 404, exactly like ids that do not exist.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_problem, unique_slug};
use crate::on_both_databases;

on_both_databases! {
    async fn a_key_of_tenant_a_gets_nothing_from_tenant_b(app) {
        let other = unique_slug("other");
        let other_key = app.create_tenant(&other).await;
        for path in ["/users", "/service-accounts", "/role-bindings", "/api-keys", "/audit/events", "/audit/verify"] {
            let response = app.client.get(app.url(&format!("/t/{other}/api/v1{path}"))).bearer_auth(&app.admin_key).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        let response = app.client.post(app.url(&format!("/t/{other}/api/v1/users")))
            .bearer_auth(&app.admin_key)
            .json(&json!({"email": "x@example.com", "display_name": "X"}))
            .send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        // And the other way round.
        let (status, _) = app.get("/users", &other_key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    async fn ids_of_tenant_a_are_not_found_in_tenant_b(app) {
        let user_in_a = app.create_user("ada@example.com").await;
        let other = unique_slug("other");
        let other_key = app.create_tenant(&other).await;
        let b = |path: &str| app.url(&format!("/t/{other}/api/v1{path}"));
        let response = app.client.get(b(&format!("/users/{user_in_a}"))).bearer_auth(&other_key).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_problem(StatusCode::NOT_FOUND, &body, StatusCode::NOT_FOUND, "not_found");
        let missing = app.client.get(b(&format!("/users/{}", uuid::Uuid::new_v4()))).bearer_auth(&other_key).send().await.unwrap();
        let missing_body: serde_json::Value = missing.json().await.unwrap();
        assert_eq!(body["detail"], missing_body["detail"], "another tenant's id looks like no id at all");
        let binding = app.client.post(b("/role-bindings")).bearer_auth(&other_key)
            .json(&json!({"role": "Admin", "subject": {"type": "user", "id": user_in_a}, "scope": {"type": "tenant"}}))
            .send().await.unwrap();
        assert_eq!(binding.status(), StatusCode::UNPROCESSABLE_ENTITY, "cannot bind a role to another tenant's user");
        // B's users list does not show A's user.
        let list: serde_json::Value = app.client.get(b("/users")).bearer_auth(&other_key).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 0);
    }

    async fn an_unknown_tenant_answers_as_a_wrong_credential_does(app) {
        // Whether a slug exists is not for the unauthenticated to learn: another tenant's key,
        // or no key, gets the same answer at an unknown tenant as at this one.
        for path in ["/t/no-such-tenant/api/v1/users", "/t/NOT_A_SLUG/api/v1/users"] {
            let unknown = app.client.get(app.url(path)).bearer_auth("fgk_wrong").send().await.unwrap();
            let known = app.client.get(app.tenant_url("/users")).bearer_auth("fgk_wrong").send().await.unwrap();
            assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(unknown.headers().get("www-authenticate"), known.headers().get("www-authenticate"));
            let (unknown, known): (serde_json::Value, serde_json::Value) = (unknown.json().await.unwrap(), known.json().await.unwrap());
            assert_eq!((&unknown["code"], &unknown["detail"]), (&known["code"], &known["detail"]), "{path}");
            let bare = app.client.get(app.url(path)).send().await.unwrap();
            assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
            let body: serde_json::Value = bare.json().await.unwrap();
            assert_eq!(body["code"], "unauthenticated");
        }
        let another_tenants_key = app.client.get(app.url("/t/no-such-tenant/api/v1/users")).bearer_auth(&app.admin_key).send().await.unwrap();
        assert_eq!(another_tenants_key.status(), StatusCode::UNAUTHORIZED);
    }
}
