//! Bad input always gets a clear 4xx problem document and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::assert_problem;
use crate::on_both_databases;

async fn raw(
    app: &crate::helpers::TestApp,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let response = app
        .client
        .post(app.tenant_url("/users"))
        .bearer_auth(&app.admin_key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/problem+json");
    (status, response.json().await.unwrap(), headers)
}

on_both_databases! {
    async fn malformed_json_is_400(app) {
        let (status, body, _) = raw(&app, "application/json", b"{\"email\": ".to_vec()).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed_request");
    }

    async fn unknown_fields_and_bad_values_are_422_naming_the_field(app) {
        let (status, body, _) = raw(&app, "application/json",
            br#"{"email":"a@example.com","display_name":"A","is_admin":true}"#.to_vec()).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(body["detail"].as_str().unwrap().contains("is_admin"), "{body}");
        let (status, body, _) = raw(&app, "application/json", br#"{"email":"nope","display_name":""}"#.to_vec()).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let fields: Vec<_> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["email", "display_name"]);
        let (status, body) = app.post("/role-bindings", &app.admin_key,
            json!({"role": "Overlord", "subject": {"type": "user", "id": uuid::Uuid::new_v4()}, "scope": {"type": "tenant"}})).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(body["errors"][0]["field"], "role");
        let (status, body) = app.post("/role-bindings", &app.admin_key,
            json!({"role": "Viewer", "subject": {"type": "robot", "id": uuid::Uuid::new_v4()}, "scope": {"type": "tenant"}})).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(body["errors"][0]["field"], "subject.type");
        let (status, body) = app.get("/users?limit=0", &app.admin_key).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let (status, body) = app.get("/users?colour=blue", &app.admin_key).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        // Nothing was created by any of this.
        let (_, list) = app.get("/users", &app.admin_key).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 0);
    }

    async fn a_body_over_the_limit_is_413(app) {
        let big = format!(r#"{{"email":"a@example.com","display_name":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
        let (status, body, _) = raw(&app, "application/json", big.into_bytes()).await;
        assert_problem(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }

    async fn text_with_nul_is_422_and_nothing_is_stored(app) {
        // PostgreSQL cannot store NUL in text or JSON; the request is refused before any write.
        let (status, body) = app.post("/processes", &app.admin_key,
            json!({"name": "p", "definition": {"step": "a\u{0}b"}})).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let (status, body) = app.post("/policies", &app.admin_key, json!({"name": "nul",
            "text": "permit(principal, action, resource);", "description": "\u{0}"})).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let (_, processes) = app.get("/processes", &app.admin_key).await;
        assert_eq!(processes["items"], json!([]));
        let (_, policies) = app.get("/policies", &app.admin_key).await;
        assert_eq!(policies["items"], json!([]));
    }

    async fn a_wrong_content_type_is_415(app) {
        let (status, body, _) = raw(&app, "text/plain", br#"{"email":"a@example.com","display_name":"A"}"#.to_vec()).await;
        assert_problem(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }

    async fn duplicates_are_409(app) {
        app.create_user("dup@example.com").await;
        let (status, body) = app.post("/users", &app.admin_key, json!({"email": "DUP@example.com", "display_name": "Again"})).await;
        assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
    }

    async fn unsupported_methods_are_405_and_trace_never_echoes(app) {
        let response = app.client.put(app.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()["allow"], "GET");
        let response = app.client.request(Method::TRACE, app.url("/healthz"))
            .header("x-secret-header", "echo-me").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(!response.text().await.unwrap().contains("echo-me"));
        let response = app.client.request(Method::PATCH, app.tenant_url("/users")).bearer_auth(&app.admin_key).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()["allow"], "GET, POST");
        let response = app.client.get(app.url("/no/such/route")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }

    async fn malformed_ids_are_404_not_500(app) {
        for path in ["/users/not-a-uuid", "/users/%00", "/service-accounts/1%27%20OR%201=1"] {
            let (status, body) = app.get(path, &app.admin_key).await;
            assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
        }
    }

    async fn every_response_carries_the_hardening_headers(app) {
        for response in [
            app.client.get(app.url("/healthz")).send().await.unwrap(),
            app.client.get(app.tenant_url("/users")).send().await.unwrap(),
            app.client.get(app.url("/nowhere")).send().await.unwrap(),
        ] {
            let h = response.headers();
            assert_eq!(h["strict-transport-security"], "max-age=31536000; includeSubDomains");
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert_eq!(h["x-frame-options"], "DENY");
            assert_eq!(h["referrer-policy"], "no-referrer");
            assert!(h["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
            assert!(h.contains_key("x-request-id"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_and_recovers() {
    use sea_orm::ConnectionTrait as _;
    let app = crate::helpers::spawn_app(crate::helpers::Db::Postgres).await;
    let (name, admin) = app.postgres_admin().await;
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    // Reads, and the audit trail, whose appends use a pool of their own.
    for path in ["/users", "/groups", "/audit/events"] {
        let response = app
            .client
            .get(app.tenant_url(path))
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(response.headers().contains_key("retry-after"), "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_problem(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "dependency_unavailable",
        );
        assert!(
            !body.to_string().to_lowercase().contains("postgres"),
            "no database text leaks: {body}"
        );
    }
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let (status, _) = app.get("/users", &app.admin_key).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "service resumes once the database is back"
    );
}

/// Connections the server closed while they were idle (a restart, a failover, an
/// administrator) are found dead by the next request's work, which starts again on new ones:
/// the first read after it, and its audit append, succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_after_the_database_closed_its_connections_succeeds() {
    use sea_orm::ConnectionTrait as _;
    let app = crate::helpers::spawn_app(crate::helpers::Db::Postgres).await;
    let (name, admin) = app.postgres_admin().await;
    for round in 0..3 {
        // Every pool holds idle connections now, the audit writer's included.
        let (status, body) = app.get("/users", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        admin
            .execute_unprepared(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid() AND query NOT LIKE 'LISTEN%'"
            ))
            .await
            .unwrap();
        let (status, body) = app.get("/users", &app.admin_key).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "round {round}, after the restart: {body}"
        );
    }
    let (status, body) = app.get("/audit/verify", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true, "{body}");
}

/// `body` sent as `content_type` to `path`, its first chunk at once and the rest never: the
/// sender is returned so that the body stays open until the answer.
async fn trickle(
    app: &crate::helpers::TestApp,
    path: &str,
    content_type: &str,
    first: &[u8],
) -> (
    reqwest::Response,
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    let (chunks, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    chunks.send(Ok(first.to_vec())).await.unwrap();
    let sent = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.admin_key)
        .header("content-type", content_type)
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), sent)
        .await
        .expect("answered before the body ended")
        .unwrap();
    (response, chunks)
}

/// A client that trickles its body is answered when the body timeout is up, not held for as
/// long as it likes (it held a handler, and the tenant's deletion waited for it); nothing is
/// stored. Forms (the token endpoint's) are bounded the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_408_and_nothing_is_stored() {
    let app = crate::helpers::spawn_app_with(
        crate::helpers::Db::Sqlite,
        crate::helpers::Options {
            vars: vec![("FLOWGATE_BODY_TIMEOUT_MS".into(), "500".into())],
            ..Default::default()
        },
    )
    .await;
    let users = format!("/t/{}/api/v1/users", app.tenant);
    let (response, _open) = trickle(&app, &users, "application/json", b"{\"email\": ").await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_problem(
        status,
        &body,
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
    );
    let (_, list) = app.get("/users", &app.admin_key).await;
    assert_eq!(list["items"], json!([]));

    let token = format!("/t/{}/auth/token", app.tenant);
    let form = "application/x-www-form-urlencoded";
    let (response, _open) = trickle(&app, &token, form, b"grant_type=client_cre").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert_eq!(
        body["error_description"], "the body did not arrive in time",
        "{body}"
    );
}
