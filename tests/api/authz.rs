//! Authorization in depth through the API: claim-based policies (the seed's $50,000 rule),
//! custom roles, scopes, explained and audited decisions, dry runs, and changes that reach every
//! replica on the next request.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Db, TestApp, assert_problem, spawn_app, unique_slug};
use crate::on_both_databases;

const FINANCE_MAY_APPROVE: &str = r#"permit(principal, action == Flowgate::Action::"task.approve", resource)
when { principal.hasTag("department") && principal.getTag("department") == "Finance" };"#;

const OVER_50K_ONLY_FROM_US: &str = r#"forbid(principal, action == Flowgate::Action::"task.approve", resource)
when { context has amount && context.amount > 50000
    && !(principal.hasTag("region") && principal.getTag("region") == "US") };"#;

async fn user_with(app: &TestApp, email: &str, attributes: Value) -> String {
    let id = app.create_user(email).await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/users/{id}"),
            &app.admin_key,
            Some(json!({"attributes": attributes})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

/// Creates the policy `name` as the tenant's Admin; its id.
pub(crate) async fn policy(app: &TestApp, name: &str, text: &str) -> String {
    let (status, body) = app
        .post(
            "/policies",
            &app.admin_key,
            json!({"name": name, "text": text}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn check(
    app: &TestApp,
    principal: Value,
    action: &str,
    resource: Value,
    context: Value,
) -> Value {
    let (status, body) = app
        .post("/authz/check", &app.admin_key, json!({"principal": principal, "action": action, "resource": resource, "context": context}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn approve(app: &TestApp, user: &str, amount: i64) -> Value {
    check(
        app,
        json!({"type": "user", "id": user}),
        "task.approve",
        json!({"type": "task", "id": "invoice-42"}),
        json!({"amount": amount}),
    )
    .await
}

on_both_databases! {
    async fn finance_users_approve_over_50000_only_from_the_us(app) {
        // The seed's example: a user in Finance can approve invoices over $50,000 only if
        // located in the US region, enforced by claims without changing any workflow.
        policy(&app, "finance-may-approve", FINANCE_MAY_APPROVE).await;
        policy(&app, "over-50k-only-from-us", OVER_50K_ONLY_FROM_US).await;
        let us_finance = user_with(&app, "alice@example.com", json!({"department": "Finance", "region": "US"})).await;
        let eu_finance = user_with(&app, "bob@example.com", json!({"department": "Finance", "region": "EU"})).await;
        let us_sales = user_with(&app, "carol@example.com", json!({"department": "Sales", "region": "US"})).await;
        let no_claims = app.create_user("dave@example.com").await;
        for (user, amount, expected, reason) in [
            (&us_finance, 10_000, "allow", "policy:finance-may-approve"),
            (&us_finance, 75_000, "allow", "policy:finance-may-approve"),
            (&eu_finance, 10_000, "allow", "policy:finance-may-approve"),
            (&eu_finance, 50_000, "allow", "policy:finance-may-approve"),
            (&eu_finance, 50_001, "deny", "policy:over-50k-only-from-us"),
            (&us_sales, 10_000, "deny", ""),
            (&us_sales, 75_000, "deny", ""),
            (&no_claims, 75_000, "deny", "policy:over-50k-only-from-us"),
        ] {
            let result = approve(&app, user, amount).await;
            assert_eq!(result["decision"], expected, "{user} {amount}: {result}");
            let reasons: Vec<&str> = result["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
            if reason.is_empty() {
                assert!(reasons.is_empty(), "{reasons:?}");
            } else {
                assert_eq!(reasons, [reason], "{user} {amount}");
            }
        }
        // Moving Bob to the US changes the answer on the next request.
        let (status, _) = app.call(Method::PATCH, &format!("/users/{eu_finance}"), &app.admin_key, Some(json!({"attributes": {"region": "US"}}))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(approve(&app, &eu_finance, 75_000).await["decision"], "allow");
        // Removing the claim removes the permission.
        let (status, _) = app.call(Method::PATCH, &format!("/users/{eu_finance}"), &app.admin_key, Some(json!({"attributes": {"department": null}}))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(approve(&app, &eu_finance, 10).await["decision"], "deny");
    }

    async fn custom_roles_grant_their_actions_and_unknown_actions_are_refused(app) {
        let (status, body) = app.post("/roles", &app.admin_key, json!({"name": "Approver", "actions": ["task.read", "tasks.approve"]})).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert!(body["detail"].as_str().unwrap().contains("tasks.approve"), "{body}");
        let (status, body) = app.post("/roles", &app.admin_key, json!({"name": "Viewer", "actions": ["task.read"]})).await;
        assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
        let (status, body) = app.post("/roles", &app.admin_key, json!({"name": "Directory reader", "actions": ["user.read"]})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["actions"], json!(["user.read"]));
        let key = app.key_with_role(Some("Directory reader")).await;
        assert_eq!(app.get("/users", &key).await.0, StatusCode::OK);
        assert_eq!(app.get("/groups", &key).await.0, StatusCode::FORBIDDEN);
        // A change to the role applies on the next request.
        let (status, _) = app.call(Method::PUT, "/roles/Directory reader", &app.admin_key, Some(json!({"actions": ["group.read"]}))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(app.get("/users", &key).await.0, StatusCode::FORBIDDEN);
        assert_eq!(app.get("/groups", &key).await.0, StatusCode::OK);
        // A bound role cannot be deleted; built-in roles cannot be changed.
        let (status, _) = app.call(Method::DELETE, "/roles/Directory reader", &app.admin_key, None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, _) = app.call(Method::PUT, "/roles/Admin", &app.admin_key, Some(json!({"actions": ["user.read"]}))).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, roles) = app.get("/roles", &app.admin_key).await;
        assert_eq!(status, StatusCode::OK);
        let designer = roles["items"].as_array().unwrap().iter().find(|r| r["name"] == "Designer").unwrap();
        assert_eq!(designer["conditional"][0]["actions"], json!(["process.publish"]));
    }

    async fn policies_are_validated_versioned_and_deleted(app) {
        let (status, body) = app.post("/policies", &app.admin_key, json!({"name": "broken", "text": "permit(principal, action == Flowgate::Action::\"nope\", resource);"})).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(body["errors"][0]["field"], "text");
        assert!(body["errors"][0]["message"].as_str().unwrap().to_lowercase().contains("nope"), "{body}");
        let (status, body) = app.post("/policies", &app.admin_key, json!({"name": "unguarded", "text": "permit(principal, action == Flowgate::Action::\"task.read\", resource) when { principal.getTag(\"region\") == \"US\" };"})).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let (status, body) = app.post("/policies", &app.admin_key, json!({"name": "Bad Name", "text": FINANCE_MAY_APPROVE})).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let id = policy(&app, "finance", FINANCE_MAY_APPROVE).await;
        let (status, _) = app.post("/policies", &app.admin_key, json!({"name": "finance", "text": FINANCE_MAY_APPROVE})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (status, updated) = app.call(Method::PUT, &format!("/policies/{id}"), &app.admin_key, Some(json!({"text": OVER_50K_ONLY_FROM_US}))).await;
        assert_eq!(status, StatusCode::OK, "{updated}");
        assert_eq!(updated["version"], 2);
        let (status, _) = app.call(Method::DELETE, &format!("/policies/{id}"), &app.admin_key, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, versions) = app.get(&format!("/policies/{id}/versions"), &app.admin_key).await;
        assert_eq!(status, StatusCode::OK);
        let versions = versions["items"].as_array().unwrap();
        assert_eq!(versions.len(), 3);
        assert!(versions[0]["text"].as_str().unwrap().contains("Finance"));
        assert!(versions[2]["text"].is_null(), "the last version records the deletion");
        // The changes are audited with before and after.
        let events = app.audit_events().await;
        let update = events.iter().find(|e| e["action"] == "policy.manage" && e["status"] == 200).unwrap();
        assert!(update["details"]["before"].as_str().unwrap().contains("Finance"));
        assert!(update["details"]["after"].as_str().unwrap().contains("50000"));
    }

    async fn a_forbid_overrides_the_admin_role_and_the_denial_names_it(app) {
        let account = app.get("/service-accounts", &app.admin_key).await.1["items"][0]["id"].as_str().unwrap().to_owned();
        policy(&app, "no-new-users", &format!(
            r#"forbid(principal == Flowgate::ServiceAccount::"{account}", action == Flowgate::Action::"user.create", resource);"#
        )).await;
        let (status, body) = app.post("/users", &app.admin_key, json!({"email": "x@example.com", "display_name": "X"})).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(app.get("/users", &app.admin_key).await.0, StatusCode::OK, "other actions still allowed");
        let events = app.audit_events().await;
        let denied = events.iter().rev().find(|e| e["decision"] == "deny").unwrap();
        assert_eq!(denied["action"], "user.create");
        assert_eq!(denied["details"]["policies"], json!(["policy:no-new-users"]));
        let result = check(&app, json!({"type": "service_account", "id": account}), "user.create", json!({"type": "tenant", "id": app.tenant}), json!({})).await;
        assert_eq!(result["decision"], "deny");
        assert_eq!(result["reasons"], json!(["policy:no-new-users"]));
        let result = check(&app, json!({"type": "service_account", "id": account}), "user.read", json!({"type": "tenant", "id": app.tenant}), json!({})).await;
        assert_eq!(result["decision"], "allow");
        assert!(result["reasons"][0].as_str().unwrap().starts_with("binding:"));
    }

    async fn removing_a_binding_removes_the_access_on_the_next_request(app) {
        let name = format!("sa-{}", uuid::Uuid::new_v4().simple());
        let (_, account) = app.post("/service-accounts", &app.admin_key, json!({"name": name})).await;
        let (_, binding) = app.post("/role-bindings", &app.admin_key, json!({"role": "Viewer", "subject": {"type": "service_account", "id": account["id"]}, "scope": {"type": "tenant"}})).await;
        let (_, key) = app.post("/api-keys", &app.admin_key, json!({"name": "k", "service_account_id": account["id"]})).await;
        let key = key["key"].as_str().unwrap();
        assert_eq!(app.get("/users", key).await.0, StatusCode::OK);
        let (status, _) = app.call(Method::DELETE, &format!("/role-bindings/{}", binding["id"].as_str().unwrap()), &app.admin_key, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.get("/users", key).await.0, StatusCode::FORBIDDEN);
    }

    async fn a_dry_run_reports_who_gains_and_loses_and_changes_nothing(app) {
        let alice = user_with(&app, "alice@example.com", json!({"department": "Finance"})).await;
        let text = FINANCE_MAY_APPROVE.replace("task.approve", "process.read");
        let response = app.client.post(app.tenant_url("/policies?dry_run=true")).bearer_auth(&app.admin_key)
            .json(&json!({"name": "finance-reads", "text": text})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let impact: Value = response.json().await.unwrap();
        assert_eq!(impact["losses"], json!([]));
        let gains = impact["gains"].as_array().unwrap();
        assert!(gains.iter().any(|g| g["principal"]["id"] == alice.as_str() && g["action"] == "process.read" && g["resource"]["type"] == "tenant"), "{impact}");
        assert!(gains.iter().all(|g| g["principal"]["id"] == alice.as_str()));
        let (_, list) = app.get("/policies", &app.admin_key).await;
        assert_eq!(list["items"], json!([]), "a dry run saves nothing");
        // Deleting a role binding in a dry run would show the loss.
        let id = policy(&app, "finance-reads", &text).await;
        let response = app.client.delete(app.tenant_url(&format!("/policies/{id}?dry_run=true"))).bearer_auth(&app.admin_key).send().await.unwrap();
        let impact: Value = response.json().await.unwrap();
        assert!(impact["losses"].as_array().unwrap().iter().any(|l| l["principal"]["id"] == alice.as_str()), "{impact}");
        assert_eq!(app.get(&format!("/policies/{id}"), &app.admin_key).await.0, StatusCode::OK);
    }

    async fn who_can_do_what_and_what_someone_can_do(app) {
        let (_, folder) = app.post("/folders", &app.admin_key, json!({"name": "Payroll"})).await;
        let folder = folder["id"].as_str().unwrap().to_owned();
        let ops = app.create_user("ops@example.com").await;
        let (status, _) = app.post("/role-bindings", &app.admin_key, json!({"role": "Operator", "subject": {"type": "user", "id": ops}, "scope": {"type": "folder", "id": folder}})).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, access) = app.get(&format!("/authz/access?type=folder&id={folder}"), &app.admin_key).await;
        assert_eq!(status, StatusCode::OK, "{access}");
        let grant = access["grants"].as_array().unwrap().iter().find(|g| g["party"]["id"] == ops.as_str()).expect("the operator has access");
        assert!(grant["actions"].as_array().unwrap().contains(&json!("folder.read")));
        assert!(!grant["actions"].as_array().unwrap().contains(&json!("folder.delete")));
        let (status, abilities) = app.get(&format!("/authz/permissions?type=user&id={ops}"), &app.admin_key).await;
        assert_eq!(status, StatusCode::OK);
        let grants = abilities["grants"].as_array().unwrap();
        assert_eq!(grants.len(), 1, "only the folder: {abilities}");
        assert_eq!(grants[0]["party"]["id"], folder.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_on_a_folder_reaches_nested_folders_and_their_processes() {
    let app = spawn_app(Db::Sqlite).await;
    let (_, top) = app
        .post("/folders", &app.admin_key, json!({"name": "Finance"}))
        .await;
    let top = top["id"].as_str().unwrap();
    let (status, nested) = app
        .post(
            &format!("/folders/{top}/folders"),
            &app.admin_key,
            json!({"name": "Invoices"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{nested}");
    let nested = nested["id"].as_str().unwrap();
    let (_, elsewhere) = app
        .post("/folders", &app.admin_key, json!({"name": "HR"}))
        .await;
    let elsewhere = elsewhere["id"].as_str().unwrap();
    let name = format!("sa-{}", uuid::Uuid::new_v4().simple());
    let (_, account) = app
        .post("/service-accounts", &app.admin_key, json!({"name": name}))
        .await;
    app.post("/role-bindings", &app.admin_key, json!({"role": "Designer", "subject": {"type": "service_account", "id": account["id"]}, "scope": {"type": "folder", "id": top}})).await;
    let (_, key) = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "k", "service_account_id": account["id"]}),
        )
        .await;
    let designer = key["key"].as_str().unwrap();
    let (status, process) = app
        .post(
            &format!("/folders/{nested}/processes"),
            designer,
            json!({"name": "Pay invoice"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{process}");
    let process = process["id"].as_str().unwrap();
    let (status, edited) = app
        .call(
            Method::PATCH,
            &format!("/processes/{process}"),
            designer,
            Some(json!({"definition": {"steps": ["check", "pay"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["version"], 2);
    let (status, published) = app
        .post(
            &format!("/processes/{process}/publish"),
            designer,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{published}");
    assert_eq!(published["published_version"], 2);
    assert_eq!(
        app.post(
            &format!("/folders/{elsewhere}/processes"),
            designer,
            json!({"name": "x"})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post("/processes", designer, json!({"name": "x"}))
            .await
            .0,
        StatusCode::FORBIDDEN,
        "not at the root"
    );
    assert_eq!(
        app.get("/users", designer).await.0,
        StatusCode::FORBIDDEN,
        "a folder role gives nothing tenant-wide"
    );
    // The audit trail names the process decided on.
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e["action"] == "process.publish"
        && e["resource_type"] == "process"
        && e["resource_id"] == process));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_designer_cannot_publish_in_production_but_an_admin_can() {
    let app = spawn_app(Db::Sqlite).await;
    let slug = unique_slug("prod");
    let response = app
        .client
        .post(app.url("/api/v1/platform/tenants"))
        .bearer_auth(&app.operator_token)
        .json(&json!({"slug": slug, "environment": "prod"}))
        .send()
        .await
        .unwrap();
    let admin = response.json::<Value>().await.unwrap()["admin_api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = |method: Method, path: String, key: String, body: Value| {
        let app = &app;
        let slug = slug.clone();
        async move {
            let r = app
                .client
                .request(method, app.url(&format!("/t/{slug}/api/v1{path}")))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (_, account) = call(
        Method::POST,
        "/service-accounts".into(),
        admin.clone(),
        json!({"name": "designer"}),
    )
    .await;
    call(Method::POST, "/role-bindings".into(), admin.clone(), json!({"role": "Designer", "subject": {"type": "service_account", "id": account["id"]}, "scope": {"type": "tenant"}})).await;
    let (_, key) = call(
        Method::POST,
        "/api-keys".into(),
        admin.clone(),
        json!({"name": "k", "service_account_id": account["id"]}),
    )
    .await;
    let designer = key["key"].as_str().unwrap().to_owned();
    let (status, process) = call(
        Method::POST,
        "/processes".into(),
        designer.clone(),
        json!({"name": "Payroll run"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let publish = format!("/processes/{}/publish", process["id"].as_str().unwrap());
    assert_eq!(
        call(Method::POST, publish.clone(), designer, json!({}))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(Method::POST, publish, admin, json!({})).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_replica_on_the_next_request() {
    let app = spawn_app(Db::Postgres).await;
    let (replica, _server, _state) = app.replica().await;
    let key = app.key_with_role(Some("Viewer")).await;
    let on_replica = |path: &str| {
        app.client
            .get(format!("{replica}/t/{}/api/v1{path}", app.tenant))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(
        on_replica("/users").await.unwrap().status(),
        StatusCode::OK,
        "the replica caches the Viewer's access"
    );
    assert_eq!(
        on_replica("/api-keys").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // A forbid created through the first replica applies on the second at once.
    policy(&app, "lock-down", r#"forbid(principal is Flowgate::ServiceAccount, action == Flowgate::Action::"user.read", resource);"#).await;
    let mut status = StatusCode::OK;
    for _ in 0..20 {
        status = on_replica("/users").await.unwrap().status();
        if status == StatusCode::FORBIDDEN {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the replica dropped its cached policies"
    );
    // Both replicas append to one unbroken chain.
    let (status, report) = app.get("/audit/verify", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_rules_never_grant_across_tenants() {
    // Whatever roles, bindings and policies two tenants hold (even a policy that permits
    // everything to anyone), one tenant's credentials get nothing from the other, and its ids
    // are not found there.
    let app = spawn_app(Db::Sqlite).await;
    let other = unique_slug("other");
    let other_admin = app.create_tenant(&other).await;
    let mut seed: u64 = 0x5eed_f10a_7e00_0001;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    let roles = ["Admin", "Designer", "Operator", "Viewer", "Auditor"];
    let wide_open = r#"permit(principal, action, resource);"#;
    let in_other = |path: &str| app.url(&format!("/t/{other}/api/v1{path}"));
    // The other tenant permits everything to anyone.
    let response = app
        .client
        .post(in_other("/policies"))
        .bearer_auth(&other_admin)
        .json(&json!({"name": "wide-open", "text": wide_open}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (_, folder) = app
        .post("/folders", &app.admin_key, json!({"name": "mine"}))
        .await;
    // Keys first: once a random forbid lands, the admin may no longer hold what a role grants.
    let mut keys = Vec::new();
    for _ in 0..12 {
        let role = roles[next(roles.len())];
        keys.push((role, app.key_with_role(Some(role)).await));
    }
    for (round, (role, key)) in keys.iter().enumerate() {
        if next(2) == 0 {
            let name = format!("random-{round}");
            let text = [
                "permit(principal, action, resource);",
                "forbid(principal, action == Flowgate::Action::\"user.read\", resource);",
            ][next(2)];
            app.post(
                "/policies",
                &app.admin_key,
                json!({"name": name, "text": text}),
            )
            .await;
        }
        for path in [
            "/users",
            "/service-accounts",
            "/policies",
            "/folders",
            "/audit/events",
        ] {
            let response = app
                .client
                .get(in_other(path))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "round {round}: {role} key on {path}"
            );
        }
        let response = app
            .client
            .get(in_other(&format!(
                "/folders/{}",
                folder["id"].as_str().unwrap()
            )))
            .bearer_auth(&other_admin)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NOT_FOUND,
            "round {round}: another tenant's folder id"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_updates_are_checked() {
    let app = spawn_app(Db::Sqlite).await;
    let user = app.create_user("ada@example.com").await;
    for attributes in [
        json!({"Bad Key": "x"}),
        json!({"region": "x".repeat(2000)}),
        json!({"region": 5}),
    ] {
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/users/{user}"),
                &app.admin_key,
                Some(json!({"attributes": attributes})),
            )
            .await;
        assert_problem(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/users/{user}"),
            &app.admin_key,
            Some(json!({"attributes": {"region": "US"}, "display_name": "Ada L."})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["attributes"], json!({"region": "US"}));
    assert_eq!(body["display_name"], "Ada L.");
    let viewer = app.key_with_role(Some("Viewer")).await;
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/users/{user}"),
            &viewer,
            Some(json!({"attributes": {"region": "EU"}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_nonsense_questions() {
    let app = spawn_app(Db::Sqlite).await;
    let user = app.create_user("ada@example.com").await;
    let principal = json!({"type": "user", "id": user});
    let ask = |body: Value| app.post("/authz/check", &app.admin_key, body);
    let (status, body) = ask(json!({"principal": principal, "action": "no.such", "resource": {"type": "tenant", "id": app.tenant}})).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, body) = ask(json!({"principal": principal, "action": "user.read", "resource": {"type": "task", "id": "t"}})).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, body) = ask(json!({"principal": principal, "action": "task.approve", "resource": {"type": "task", "id": "t"}, "context": {"amount": "lots"}})).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, body) = ask(json!({"principal": {"type": "user", "id": uuid::Uuid::new_v4()}, "action": "user.read", "resource": {"type": "tenant", "id": app.tenant}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "principal.id");
    let (status, body) = ask(json!({"principal": principal, "action": "user.read", "resource": {"type": "tenant", "id": "another-tenant"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "resource.id");
    let (status, schema) = app.get("/authz/schema", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        schema["cedarschema"]
            .as_str()
            .unwrap()
            .contains("action \"task.approve\"")
    );
    let (status, actions) = app.get("/authz/actions", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        actions["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "task.approve" && a["amount"] == true)
    );
}

/// Creates the custom role `name` with `actions`.
pub(crate) async fn create_role(app: &TestApp, name: &str, actions: &[&str]) {
    let (status, body) = app
        .post(
            "/roles",
            &app.admin_key,
            json!({"name": name, "actions": actions}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A service account holding the custom role `actions` on the tenant, and its key.
pub(crate) async fn custom_key(app: &TestApp, actions: &[&str]) -> (String, String) {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let role = format!("Custom {unique}");
    create_role(app, &role, actions).await;
    let (_, account) = app
        .post(
            "/service-accounts",
            &app.admin_key,
            json!({"name": format!("sa-{unique}")}),
        )
        .await;
    let (status, _) = app.post("/role-bindings", &app.admin_key, json!({"role": role, "subject": {"type": "service_account", "id": account["id"]}, "scope": {"type": "tenant"}})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, key) = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "k", "service_account_id": account["id"]}),
        )
        .await;
    (
        key["key"].as_str().unwrap().to_owned(),
        account["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_grants_more_than_they_hold() {
    // Delegation never escalates: a role binding, a custom role or an API key can only hand out
    // permissions the caller holds on that scope.
    let app = spawn_app(Db::Sqlite).await;
    let (binder, binder_id) = custom_key(&app, &["role_binding.create", "user.read"]).await;
    let (status, body) = app.post("/role-bindings", &binder, json!({"role": "Admin", "subject": {"type": "service_account", "id": binder_id}, "scope": {"type": "tenant"}})).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("api_key.create")
            || body["detail"].as_str().unwrap().contains("…"),
        "{body}"
    );
    create_role(&app, "Reader", &["user.read"]).await;
    let someone = app.create_user("someone@example.com").await;
    let (status, body) = app.post("/role-bindings", &binder, json!({"role": "Reader", "subject": {"type": "user", "id": someone}, "scope": {"type": "tenant"}})).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a role within the binder's own rights: {body}"
    );

    let (minter, _) = custom_key(&app, &["api_key.create"]).await;
    let (_, accounts) = app.get("/service-accounts", &app.admin_key).await;
    let bootstrap = accounts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "bootstrap-admin")
        .unwrap();
    let (status, body) = app
        .post(
            "/api-keys",
            &minter,
            json!({"name": "escalate", "service_account_id": bootstrap["id"]}),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (_, powerless) = app
        .post(
            "/service-accounts",
            &app.admin_key,
            json!({"name": "powerless"}),
        )
        .await;
    let (status, _) = app
        .post(
            "/api-keys",
            &minter,
            json!({"name": "fine", "service_account_id": powerless["id"]}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a key for an account with no rights gives nothing away"
    );

    let (role_manager, _) = custom_key(&app, &["role.manage", "user.read"]).await;
    let (status, body) = app
        .post(
            "/roles",
            &role_manager,
            json!({"name": "Grabber", "actions": ["api_key.create"]}),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, _) = app
        .post(
            "/roles",
            &role_manager,
            json!({"name": "Readers too", "actions": ["user.read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // The refusals are in the audit trail as denials.
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e["action"] == "role_binding.create"
        && e["decision"] == "deny"
        && e["status"] == 403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_memberships_and_claims_give_only_what_their_author_holds() {
    //! A membership or a claim is a grant in disguise: whoever adds a user to a group or sets
    //! the claims a policy keys on must hold what that gives the user.
    let app = spawn_app(Db::Sqlite).await;
    let (_, admins) = app
        .post("/groups", &app.admin_key, json!({"name": "admins"}))
        .await;
    let (status, _) = app.post("/role-bindings", &app.admin_key, json!({"role": "Admin", "subject": {"type": "group", "id": admins["id"]}, "scope": {"type": "tenant"}})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, readers) = app
        .post("/groups", &app.admin_key, json!({"name": "readers"}))
        .await;
    create_role(&app, "Directory reader", &["user.read", "group.read"]).await;
    let (status, _) = app.post("/role-bindings", &app.admin_key, json!({"role": "Directory reader", "subject": {"type": "group", "id": readers["id"]}, "scope": {"type": "tenant"}})).await;
    assert_eq!(status, StatusCode::CREATED);
    // A grant on one secret, which no folder or process shows.
    let (_, vault_readers) = app
        .post("/groups", &app.admin_key, json!({"name": "vault-readers"}))
        .await;
    create_role(&app, "Secret reader", &["secret.read"]).await;
    let (status, secret) = app
        .post(
            "/secrets",
            &app.admin_key,
            json!({"name": "erp-token", "value": "v"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{secret}");
    let (status, body) = app.post("/role-bindings", &app.admin_key, json!({"role": "Secret reader", "subject": {"type": "group", "id": vault_readers["id"]}, "scope": {"type": "secret", "id": secret["id"]}})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let user = app.create_user("joiner@example.com").await;
    let (member_adder, _) =
        custom_key(&app, &["group.member_add", "user.read", "group.read"]).await;
    let (status, body) = app
        .post(
            &format!("/groups/{}/members", vault_readers["id"].as_str().unwrap()),
            &member_adder,
            json!({"user_id": user}),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("secret.read"),
        "{body}"
    );

    let (status, body) = app
        .post(
            &format!("/groups/{}/members", admins["id"].as_str().unwrap()),
            &member_adder,
            json!({"user_id": user}),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = app
        .post(
            &format!("/groups/{}/members", readers["id"].as_str().unwrap()),
            &member_adder,
            json!({"user_id": user}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "the readers' rights are the adder's too: {body}"
    );

    let (status, _) = app.post("/policies", &app.admin_key, json!({"name": "finance-admins", "text": "permit(principal, action == Flowgate::Action::\"api_key.create\", resource) when { principal.hasTag(\"department\") && principal.getTag(\"department\") == \"Finance\" };"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (claims_setter, _) = custom_key(&app, &["user.update", "user.read"]).await;
    let user_path = format!("/users/{user}");
    let patch = |attributes: serde_json::Value| {
        app.call(
            reqwest::Method::PATCH,
            &user_path,
            &claims_setter,
            Some(json!({"attributes": attributes})),
        )
    };
    let (status, body) = patch(json!({"department": "Finance"})).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("api_key.create"),
        "{body}"
    );
    let (_, stored) = app.get(&format!("/users/{user}"), &app.admin_key).await;
    assert_eq!(stored["attributes"], json!({}), "nothing was changed");
    // Whatever its value: the policy reads the claim under conditions no single request shows.
    let (status, body) = patch(json!({"department": "Sales"})).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = patch(json!({"region": "EU"})).await;
    assert_eq!(status, StatusCode::OK, "a claim no policy reads: {body}");
    // An Admin holds everything, so may do both.
    let (status, _) = app
        .post(
            &format!("/groups/{}/members", admins["id"].as_str().unwrap()),
            &app.admin_key,
            json!({"user_id": user}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e["action"] == "group.member_add"
        && e["decision"] == "deny"
        && e["status"] == 403));
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "user.update" && e["decision"] == "deny" && e["status"] == 403)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbid_on_a_role_action_group_applies_to_its_actions() {
    let app = spawn_app(Db::Sqlite).await;
    let viewer = app.key_with_role(Some("Viewer")).await;
    assert_eq!(app.get("/users", &viewer).await.0, StatusCode::OK);
    policy(&app, "no-viewing", r#"forbid(principal is Flowgate::ServiceAccount, action in Flowgate::Action::"role:Viewer", resource);"#).await;
    assert_eq!(app.get("/users", &viewer).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/users", &app.admin_key).await.0,
        StatusCode::FORBIDDEN,
        "the forbid names every account"
    );
    assert_eq!(
        app.get("/api-keys", &app.admin_key).await.0,
        StatusCode::OK,
        "actions outside the group stay allowed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_bindings_make_one() {
    let app = spawn_app(Db::Postgres).await;
    let user = app.create_user("twice@example.com").await;
    let body = json!({"role": "Viewer", "subject": {"type": "user", "id": user}, "scope": {"type": "tenant"}});
    let (a, b) = tokio::join!(
        app.post("/role-bindings", &app.admin_key, body.clone()),
        app.post("/role-bindings", &app.admin_key, body.clone())
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT]);
}

/// A replica whose invalidation listener lost its connection may have missed notifications:
/// once it reconnects it holds no cached policy from before. The change is made behind the
/// application's back (no notification is ever sent), so only the flush on reconnection can
/// make the replica see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_listener_reconnects_forgets_what_it_cached() {
    use sea_orm::{ConnectionTrait as _, Statement};
    let app = spawn_app(Db::Postgres).await;
    let (replica, _server, _state) = app.replica().await;
    let key = app.key_with_role(None).await;
    let on_replica = || {
        app.client
            .get(format!("{replica}/t/{}/api/v1/users", app.tenant))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(on_replica().await.unwrap().status(), StatusCode::FORBIDDEN);
    let (_, accounts) = app.get("/service-accounts?limit=500", &app.admin_key).await;
    let account = accounts["items"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.tenant_sql(&format!(
        "INSERT INTO role_bindings (id, role, subject_type, subject_id, scope_type, scope_id, created_at) \
         VALUES ('{}', 'Viewer', 'service_account', '{account}', 'tenant', NULL, now())",
        Uuid::now_v7()
    ))
    .await;
    assert_eq!(
        on_replica().await.unwrap().status(),
        StatusCode::FORBIDDEN,
        "without a notification the replica still serves what it cached"
    );

    let (name, admin) = app.postgres_admin().await;
    let listeners = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{name}' AND query LIKE 'LISTEN%'"
    );
    let pids = |rows: Vec<sea_orm::QueryResult>| -> Vec<i32> {
        rows.iter()
            .map(|r| r.try_get::<i32>("", "pid").unwrap())
            .collect()
    };
    let before = pids(
        admin
            .query_all_raw(Statement::from_string(
                admin.get_database_backend(),
                &listeners,
            ))
            .await
            .unwrap(),
    );
    assert!(!before.is_empty(), "the replicas listen");
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND query LIKE 'LISTEN%'"
        ))
        .await
        .unwrap();
    let mut reconnected = false;
    for _ in 0..100 {
        let now = pids(
            admin
                .query_all_raw(Statement::from_string(
                    admin.get_database_backend(),
                    &listeners,
                ))
                .await
                .unwrap(),
        );
        if now.len() >= before.len() && now.iter().all(|pid| !before.contains(pid)) {
            reconnected = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reconnected, "the listeners came back");
    let mut status = StatusCode::FORBIDDEN;
    for _ in 0..20 {
        status = on_replica().await.unwrap().status();
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        status,
        StatusCode::OK,
        "the reconnected replica reloaded its policies"
    );
}

/// `n` rows of a multi-row `VALUES`, the `i`-th written by `row`.
fn rows(n: usize, row: impl Fn(usize) -> String) -> String {
    (0..n).map(row).collect::<Vec<_>>().join(", ")
}

/// A forbid for a group nobody is in, named `name`.
fn idle_forbid(name: &str) -> Value {
    json!({"name": name, "text": format!(r#"forbid(principal in Flowgate::Group::"{}", action == Flowgate::Action::"user.read", resource);"#, Uuid::new_v4())})
}

on_both_databases! {
    async fn a_tenant_holds_a_bounded_number_of_rules(app) {
        // Every rule is compiled into the tenant's policy set whenever one changes: a tenant
        // cannot grow that build without bound on the pool every tenant shares.
        const AT: &str = "'2026-01-01T00:00:00Z'";
        app.tenant_sql(&format!(
            "INSERT INTO policies (id, name, description, text, version, created_at, updated_at) VALUES {}",
            rows(999, |i| format!(
                "('{}', 'filler-{i}', '', '{}', 1, {AT}, {AT})",
                Uuid::now_v7(),
                idle_forbid("filler")["text"].as_str().unwrap()
            ))
        ))
        .await;
        let (status, last) = app.post("/policies", &app.admin_key, idle_forbid("the-1000th")).await;
        assert_eq!(status, StatusCode::CREATED, "{last}");
        let (status, body) = app.post("/policies", &app.admin_key, idle_forbid("one-more")).await;
        assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
        assert!(body["detail"].as_str().unwrap().contains("1000 policies"), "{body}");
        let stored = app.tenant_rows("SELECT name FROM policies WHERE name = 'one-more'").await;
        assert!(stored.is_empty(), "nothing of the refused policy is stored");
        let (status, _) = app
            .call(Method::DELETE, &format!("/policies/{}", last["id"].as_str().unwrap()), &app.admin_key, None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = app.post("/policies", &app.admin_key, idle_forbid("one-more")).await;
        assert_eq!(status, StatusCode::CREATED, "room again once one is gone: {body}");

        app.tenant_sql(&format!(
            "INSERT INTO roles (id, name, description, actions, created_at, updated_at) VALUES {}",
            rows(199, |i| format!("('{}', 'Filler {i}', '', '[\"user.read\"]', {AT}, {AT})", Uuid::now_v7()))
        ))
        .await;
        create_role(&app, "The 200th", &["user.read"]).await;
        let (status, body) = app.post("/roles", &app.admin_key, json!({"name": "One more", "actions": ["user.read"]})).await;
        assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
        assert!(body["detail"].as_str().unwrap().contains("200 custom roles"), "{body}");

        // The bootstrap binding and 4,998 more: one short of 5,000.
        app.tenant_sql(&format!(
            "INSERT INTO role_bindings (id, role, subject_type, subject_id, scope_type, scope_id, created_at) VALUES {}",
            rows(4998, |_| format!("('{}', 'Viewer', 'user', '{}', 'tenant', NULL, {AT})", Uuid::now_v7(), Uuid::new_v4()))
        ))
        .await;
        let someone = app.create_user("someone@example.com").await;
        let bind = |role: &str| json!({"role": role, "subject": {"type": "user", "id": someone}, "scope": {"type": "tenant"}});
        let (status, body) = app.post("/role-bindings", &app.admin_key, bind("Viewer")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = app.post("/role-bindings", &app.admin_key, bind("Auditor")).await;
        assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
        assert!(body["detail"].as_str().unwrap().contains("5000 role bindings"), "{body}");
    }
}

/// Two memberships that gave what their author lacked: a group named in a policy's conditions
/// beside the request's context (invisible to a check without that context), and a role on a
/// folder with no process in it yet (whose processes-to-come nothing stood for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_group_gives_only_what_its_author_holds_in_any_context() {
    let app = spawn_app(Db::Sqlite).await;
    let (member_adder, _) =
        custom_key(&app, &["group.member_add", "user.read", "group.read"]).await;
    let user = app.create_user("joiner@example.com").await;
    let add = |group: &Value| {
        let path = format!("/groups/{}/members", group["id"].as_str().unwrap());
        let (app, key, user) = (&app, member_adder.clone(), user.clone());
        async move { app.post(&path, &key, json!({"user_id": user})).await }
    };

    let (_, finance) = app
        .post("/groups", &app.admin_key, json!({"name": "finance"}))
        .await;
    let small_approvals = format!(
        r#"permit(principal, action == Flowgate::Action::"task.approve", resource) when {{ principal in Flowgate::Group::"{}" && context has amount && context.amount <= 10000 }};"#,
        finance["id"].as_str().unwrap()
    );
    policy(&app, "finance-small-approvals", &small_approvals).await;
    let (status, body) = add(&finance).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("task.approve"),
        "{body}"
    );

    let (_, builders) = app
        .post("/groups", &app.admin_key, json!({"name": "builders"}))
        .await;
    let (status, folder) = app
        .post("/folders", &app.admin_key, json!({"name": "empty for now"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{folder}");
    create_role(&app, "Process runner", &["process.execute"]).await;
    let (status, body) = app.post("/role-bindings", &app.admin_key, json!({"role": "Process runner", "subject": {"type": "group", "id": builders["id"]}, "scope": {"type": "folder", "id": folder["id"]}})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = add(&builders).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("process.execute"),
        "{body}"
    );

    // A group whose policies give nothing more takes the member.
    let (_, plain) = app
        .post("/groups", &app.admin_key, json!({"name": "plain"}))
        .await;
    let (status, body) = add(&plain).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

/// Identical memberships and bindings asked for at once: one is made, the others are answered
/// as duplicates (204, 409), never as a server error from a PostgreSQL transaction aborted by
/// the unique index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_grants_asked_for_at_once_answer_alike() {
    let app = spawn_app(Db::Postgres).await;
    let user = app.create_user("twice@example.com").await;
    let (_, group) = app
        .post("/groups", &app.admin_key, json!({"name": "twice"}))
        .await;
    let members = format!("/groups/{}/members", group["id"].as_str().unwrap());
    let adds = (0..8).map(|_| app.post(&members, &app.admin_key, json!({"user_id": user})));
    for (status, body) in futures_util::future::join_all(adds).await {
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let binding = json!({"role": "Viewer", "subject": {"type": "user", "id": user}, "scope": {"type": "tenant"}});
    let binds = (0..8).map(|_| app.post("/role-bindings", &app.admin_key, binding.clone()));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(binds)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
}
