//! Operators onboard, suspend, resume and delete tenants; only the operator token may.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, unique_slug};
use crate::on_both_databases;

async fn operator(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .request(method, app.url(&format!("/api/v1/platform{path}")))
        .bearer_auth(&app.operator_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

on_both_databases! {
    async fn onboarding_returns_the_tenant_and_a_working_admin_key(app) {
        let slug = unique_slug("onboard");
        let (status, body) = operator(&app, reqwest::Method::POST, "/tenants",
            Some(json!({"slug": slug, "name": "Onboard Inc", "environment": "prod"}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["tenant"]["slug"], slug.as_str());
        assert_eq!(body["tenant"]["environment"], "prod");
        assert_eq!(body["tenant"]["status"], "active");
        let key = body["admin_api_key"].as_str().unwrap();
        assert!(key.starts_with("fgk_"));
        let users = app.client.get(app.url(&format!("/t/{slug}/api/v1/users"))).bearer_auth(key).send().await.unwrap();
        assert_eq!(users.status(), StatusCode::OK);
        let (status, list) = operator(&app, reqwest::Method::GET, "/tenants", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(list["items"].as_array().unwrap().iter().any(|t| t["slug"] == slug.as_str()));
    }

    async fn bad_and_reserved_slugs_are_422_and_duplicates_409(app) {
        // The last: the shape a 62-character slug's database schema name is shortened to.
        let lookalike = format!("{}-0123456789", "a".repeat(50));
        for slug in ["A", "1abc", "has_underscore", "api", "platform", &"a".repeat(64), &lookalike] {
            let (status, body) = operator(&app, reqwest::Method::POST, "/tenants", Some(json!({"slug": slug}))).await;
            assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
            assert_eq!(body["errors"][0]["field"], "slug", "{body}");
        }
        let (status, body) = operator(&app, reqwest::Method::POST, "/tenants",
            Some(json!({"slug": "ok-slug", "environment": "production"}))).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let (status, body) = operator(&app, reqwest::Method::POST, "/tenants", Some(json!({"slug": app.tenant}))).await;
        assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
    }

    async fn a_suspended_tenant_is_refused_until_resumed(app) {
        let (status, body) = operator(&app, reqwest::Method::POST, &format!("/tenants/{}/suspend", app.tenant), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "suspended");
        let (status, body) = app.get("/users", &app.admin_key).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "tenant_suspended");
        let (status, _) = operator(&app, reqwest::Method::POST, &format!("/tenants/{}/resume", app.tenant), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = app.get("/users", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK);
    }

    async fn deleting_a_tenant_drops_its_data_and_keys(app) {
        let slug = unique_slug("doomed");
        let key = app.create_tenant(&slug).await;
        let (status, _) = operator(&app, reqwest::Method::DELETE, &format!("/tenants/{slug}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let users = app.client.get(app.url(&format!("/t/{slug}/api/v1/users"))).bearer_auth(&key).send().await.unwrap();
        assert_eq!(users.status(), StatusCode::UNAUTHORIZED, "a deleted tenant is as unknown as any");
        assert!(!app.data_dir.join(format!("keystore/tenants/{slug}")).exists(), "keys destroyed");
        match app.db {
            crate::helpers::Db::Sqlite => assert!(!app.data_dir.join(format!("tenants/{slug}.db")).exists()),
            crate::helpers::Db::Postgres => {
                use sea_orm::ConnectionTrait as _;
                let conn = sea_orm::Database::connect(app.database_url().unwrap()).await.unwrap();
                let schema = flowgate::tenancy::Slug::parse(&slug).unwrap().schema();
                let row = conn.query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    format!("SELECT 1 FROM information_schema.schemata WHERE schema_name = '{schema}'"),
                )).await.unwrap();
                assert!(row.is_none(), "schema {schema} still exists");
            }
        }
        let (status, _) = operator(&app, reqwest::Method::DELETE, &format!("/tenants/{slug}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // The slug can be onboarded again, with fresh keys.
        let again = app.create_tenant(&slug).await;
        assert_ne!(again, key);
    }

    async fn deleting_a_tenant_waits_for_its_requests_under_way(app) {
        // A secret's creation whose headers found the tenant live, its body still on the way:
        // the deletion waits for it, so the value it writes to the key store is destroyed with
        // the tenant's keys. Before, the deletion went ahead and the value, written after the
        // keys' destruction, stayed in the key store for good.
        let slug = unique_slug("busy");
        let key = app.create_tenant(&slug).await;
        let (chunks, body) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        let body = futures_util::stream::unfold(body, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let creating = tokio::spawn(
            app.client
                .post(app.url(&format!("/t/{slug}/api/v1/secrets")))
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(body))
                .send(),
        );
        chunks.send(Ok(b"{\"name\": \"late\", ".to_vec())).await.unwrap();
        // The request is under way in the tenant once its first chunk was read or awaited.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let path = format!("/tenants/{slug}");
        let deleting = operator(&app, reqwest::Method::DELETE, &path, None);
        tokio::pin!(deleting);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(500), &mut deleting).await;
        assert!(waited.is_err(), "the deletion waits for the request: {waited:?}");
        chunks.send(Ok(b"\"value\": \"written-late\"}".to_vec())).await.unwrap();
        drop(chunks);
        let created = creating.await.unwrap().unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let (status, _) = deleting.await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(!app.data_dir.join(format!("keystore/tenants/{slug}")).exists(), "the late value is destroyed too");
    }

    async fn the_platform_trail_records_operator_calls_refusals_and_deletions(app) {
        // Operator calls leave a trace too, in the platform's own chain: refused tokens, and
        // deletions of tenants whose own trail is destroyed with them.
        let wrong = app.client.get(app.url("/api/v1/platform/tenants"))
            .bearer_auth("op-wrong-token-0123456789abcdef").send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        // A path no tenant can have (a NUL in it) is refused and recorded all the same.
        let nul = app.client.delete(app.url("/api/v1/platform/tenants/%00"))
            .bearer_auth("op-wrong-token-0123456789abcdef").send().await.unwrap();
        assert_eq!(nul.status(), StatusCode::UNAUTHORIZED);
        let slug = unique_slug("gone");
        app.create_tenant(&slug).await;
        let (status, _) = operator(&app, reqwest::Method::DELETE, &format!("/tenants/{slug}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        let (status, page) = operator(&app, reqwest::Method::GET, "/audit/events?limit=1000", None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let events = page["items"].as_array().unwrap();
        assert!(events.iter().all(|e| e["trail"] == "platform"));
        let refused = events.iter()
            .find(|e| e["action"] == "tenant.list" && e["status"] == 401)
            .expect("the refused call is recorded");
        assert_eq!(refused["actor_type"], "anonymous");
        assert_eq!(refused["details"]["reason"], "invalid_operator_token");
        assert!(!page.to_string().contains("op-wrong-token"), "the presented token is never recorded");
        assert!(!page.to_string().contains(&app.operator_token));
        assert!(events.iter().any(|e| e["action"] == "tenant.delete" && e["status"] == 401 && e["resource_id"].is_null()));
        let deletions: Vec<&Value> = events.iter()
            .filter(|e| e["action"] == "tenant.delete" && e["resource_id"] == slug.as_str())
            .collect();
        assert!(!deletions.is_empty(), "the deletion outlives the tenant's own trail");
        assert!(deletions.iter().all(|e| e["actor_type"] == "operator"));

        let (status, report) = operator(&app, reqwest::Method::GET, "/audit/verify", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(report["ok"], true, "{report}");
        app.control_sql("UPDATE audit_events SET status = 200 WHERE status = 401").await;
        let (_, report) = operator(&app, reqwest::Method::GET, "/audit/verify", None).await;
        assert_eq!(report["ok"], false, "an edited platform event is detected: {report}");
    }

    async fn platform_calls_need_the_operator_token(app) {
        let url = app.url("/api/v1/platform/tenants");
        let none = app.client.get(&url).send().await.unwrap();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
        assert!(none.headers().get("www-authenticate").is_some());
        let wrong = app.client.get(&url).bearer_auth("op-wrong-token").send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let tenant_key = app.client.get(&url).bearer_auth(&app.admin_key).send().await.unwrap();
        assert_eq!(tenant_key.status(), StatusCode::UNAUTHORIZED);
        let unauthenticated_create = app.client.post(&url).body("{not json").send().await.unwrap();
        assert_eq!(unauthenticated_create.status(), StatusCode::UNAUTHORIZED, "auth errors win over body errors");
    }

    async fn onboarding_is_audited_in_the_tenants_own_chain(app) {
        let events = app.audit_events().await;
        let actions: Vec<_> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(&actions[..4], ["tenant.create", "service_account.create", "role_binding.create", "api_key.create"]);
        assert!(events[..4].iter().all(|e| e["actor_type"] == "operator"));
        let text = serde_json::to_string(&events).unwrap();
        assert!(!text.contains(&app.admin_key), "the key never enters the audit trail");
    }
}
