//! Attacks a security review tried, each kept as the regression test of its fix.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, assert_problem, spawn_app};
use crate::on_both_databases;

/// A policy text that nests deeper than the parser's stack allows.
fn nested_policy(depth: usize) -> String {
    format!(
        "permit(principal, action, resource) when {{ {}true{} }};",
        "(".repeat(depth),
        ")".repeat(depth)
    )
}

/// `caller`'s request for an API key of the service account `account`.
async fn issue_key(app: &TestApp, caller: &str, account: &str) -> (StatusCode, Value) {
    app.post(
        "/api-keys",
        caller,
        json!({"name": "k", "service_account_id": account}),
    )
    .await
}

async fn still_serves(app: &TestApp) {
    let (status, _) = app.get("/users", &app.admin_key).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the server answers after the attack"
    );
}

/// One tenant admin cannot take the process down for every tenant: a policy nested a few
/// hundred levels deep (or a chain of thousands of operators) is refused with 422, saved or
/// dry-run, before Cedar's recursive parser could overflow the worker's stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_policy_is_refused_and_the_server_survives() {
    let app = spawn_app(Db::Sqlite).await;
    let chain = format!(
        "permit(principal, action, resource) when {{ {} }};",
        vec!["true"; 1500].join(" && ")
    );
    for text in [nested_policy(400), nested_policy(5000), chain] {
        for path in ["/policies", "/policies?dry_run=true"] {
            let (status, body) = app
                .post(path, &app.admin_key, json!({"name": "deep", "text": text}))
                .await;
            assert_problem(
                status,
                &body,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
            );
            assert_eq!(body["errors"][0]["field"], "text", "{body}");
        }
    }
    still_serves(&app).await;
    // A policy of ordinary depth is still taken: the bound is not a refusal of everything.
    let (status, body) = app
        .post(
            "/policies",
            &app.admin_key,
            json!({"name": "ordinary", "text": nested_policy(8)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

on_both_databases! {
    async fn a_deep_policy_update_is_refused_too(app) {
        let (status, created) = app
            .post("/policies", &app.admin_key, json!({"name": "p", "text": nested_policy(2)}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap();
        let (status, body) = app
            .call(reqwest::Method::PUT, &format!("/policies/{id}"), &app.admin_key, Some(json!({"text": nested_policy(600)})))
            .await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        still_serves(&app).await;
    }
}

/// A deeply nested context in an explained decision is refused before Cedar converts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_check_context_is_refused() {
    let app = spawn_app(Db::Sqlite).await;
    let user = app.create_user("deep@example.com").await;
    // Deeper than 64 levels, serde_json refuses the body itself (400).
    let mut context = json!(1);
    for _ in 0..30 {
        context = json!({"a": [context]});
    }
    let (status, body) = app
        .post(
            "/authz/check",
            &app.admin_key,
            json!({"principal": {"type": "user", "id": user}, "action": "user.read",
                   "resource": {"type": "tenant", "id": app.tenant}, "context": {"nested": context}}),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    still_serves(&app).await;
}

/// `policy.manage` is not a path to everything: a holder of only that action cannot write a
/// permit for itself (or anyone) that grants what it lacks, nor lift a forbid it could not
/// impose the lack of; an Admin still can, and a forbid needs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_manage_alone_cannot_grant_what_it_lacks() {
    let app = spawn_app(Db::Sqlite).await;
    let (key, _) = crate::authz::custom_key(&app, &["policy.manage", "user.read"]).await;
    let grant_all = "permit(principal, action, resource);";
    let create_users = r#"permit(principal, action == Flowgate::Action::"user.create", resource);"#;
    for text in [grant_all, create_users] {
        for path in ["/policies", "/policies?dry_run=true"] {
            let (status, body) = app
                .post(path, &key, json!({"name": "mine", "text": text}))
                .await;
            assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        }
    }
    let (status, body) = app
        .post(
            "/users",
            &key,
            json!({"email": "x@example.com", "display_name": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // What it holds, it may grant; a forbid takes away and needs nothing.
    let (status, body) = app
        .post("/policies", &key, json!({"name": "readers", "text": r#"permit(principal, action == Flowgate::Action::"user.read", resource);"#}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let forbid = r#"forbid(principal, action == Flowgate::Action::"user.create", resource);"#;
    let (status, body) = app
        .post(
            "/policies",
            &key,
            json!({"name": "no-new-users", "text": forbid}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    // Lifting that forbid gives back `user.create`, which the caller lacks.
    let (status, body) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/policies/{id}"),
            &key,
            None,
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            &format!("/policies/{id}"),
            &key,
            Some(json!({"text": "forbid(principal, action, resource) when { false };"})),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    // The Admin holds everything the forbid takes away (forbids bind the Admin too, so it is
    // lifted first) and may then grant it.
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/policies/{id}"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    crate::authz::policy(&app, "everything", create_users).await;
}

/// A forbid that restrains the caller itself cannot be lifted by it: what it wins back would be
/// more than it held. Only a caller who then holds everything (an Admin) may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cannot_lift_a_forbid_on_itself() {
    let app = spawn_app(Db::Sqlite).await;
    let (key, account) =
        crate::authz::custom_key(&app, &["policy.manage", "policy.read", "user.create"]).await;
    let forbid = format!(
        r#"forbid(principal == Flowgate::ServiceAccount::"{account}", action == Flowgate::Action::"user.create", resource);"#
    );
    let id = crate::authz::policy(&app, "restrained", &forbid).await;
    let (status, _) = app
        .post(
            "/users",
            &key,
            json!({"email": "r@example.com", "display_name": "r"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the forbid is in force");
    let (status, body) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/policies/{id}"),
            &key,
            None,
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/policies/{id}"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the Admin may");
}

/// Issuing a key for an account weighs what the account can do in every context, not only the
/// default one: a grant that holds only from some network is still a grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_cannot_be_issued_for_an_account_with_grants_the_issuer_lacks_from_some_network() {
    let app = spawn_app(Db::Sqlite).await;
    let (issuer, _) = crate::authz::custom_key(&app, &["api_key.create", "user.read"]).await;
    let (_, target) = app
        .post(
            "/service-accounts",
            &app.admin_key,
            json!({"name": "from-the-office"}),
        )
        .await;
    let target = target["id"].as_str().unwrap().to_owned();
    let office_only = format!(
        r#"permit(principal == Flowgate::ServiceAccount::"{target}", action == Flowgate::Action::"user.create", resource)
           when {{ context has source_ip && context.source_ip.isInRange(ip("127.0.0.0/8")) }};"#
    );
    crate::authz::policy(&app, "office", &office_only).await;
    let (status, body) = issue_key(&app, &issuer, &target).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("user.create"),
        "{body}"
    );
    // The Admin, who holds user.create, may.
    let (status, body) = issue_key(&app, &app.admin_key, &target).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// What a caller holds is what its own decisions say where it asks from: a forbid that holds
/// from the caller's address (outside the office network) holds in the delegation check too,
/// so the caller cannot hand the action to an account that holds it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_forbidden_from_its_network_cannot_hand_the_action_out() {
    let app = spawn_app(Db::Sqlite).await;
    let (mallory, mallory_id) =
        crate::authz::custom_key(&app, &["api_key.create", "user.create", "user.read"]).await;
    let (_, target) = crate::authz::custom_key(&app, &["user.create"]).await;
    let outside_the_office = format!(
        r#"forbid(principal == Flowgate::ServiceAccount::"{mallory_id}", action == Flowgate::Action::"user.create", resource)
           when {{ context has source_ip && !context.source_ip.isInRange(ip("10.0.0.0/8")) }};"#
    );
    crate::authz::policy(&app, "office", &outside_the_office).await;
    // From the loopback, the forbid holds for Mallory's own calls…
    let user = json!({"email": "eve@example.com", "display_name": "Eve"});
    let (status, body) = app.post("/users", &mallory, user).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    // …and for what she would hand out.
    let (status, body) = issue_key(&app, &mallory, &target).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("user.create"),
        "{body}"
    );
    let (status, body) = issue_key(&app, &app.admin_key, &target).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// An object that a policy names by id sits in its folder for the delegation checks too: a
/// forbid on the author for one secret inside folder F makes a grant on F more than the author
/// holds (the check tried the secret at the tenant's root, where F's grants do not reach).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbid_on_one_object_binds_the_author_of_a_grant_on_its_folder() {
    let app = spawn_app(Db::Sqlite).await;
    let (_, folder) = app
        .post("/folders", &app.admin_key, json!({"name": "finance"}))
        .await;
    let folder = folder["id"].as_str().unwrap().to_owned();
    let (status, secret) = app
        .post(
            "/secrets",
            &app.admin_key,
            json!({"name": "erp-token", "value": "s3cr3t", "folder_id": folder}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{secret}");
    let secret = secret["id"].as_str().unwrap().to_owned();
    let (mallory, mallory_id) =
        crate::authz::custom_key(&app, &["role_binding.create", "role_binding.read"]).await;
    let admin_on = |subject: &str| {
        json!({"role": "Admin", "subject": {"type": "service_account", "id": subject},
               "scope": {"type": "folder", "id": folder}})
    };
    let (status, body) = app
        .post("/role-bindings", &app.admin_key, admin_on(&mallory_id))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let forbid = format!(
        r#"forbid(principal == Flowgate::ServiceAccount::"{mallory_id}", action, resource == Flowgate::Secret::"{secret}");"#
    );
    let policy = crate::authz::policy(&app, "not-the-erp-token", &forbid).await;
    let (_, helper) = app
        .post(
            "/service-accounts",
            &app.admin_key,
            json!({"name": "helper"}),
        )
        .await;
    let helper = helper["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post("/role-bindings", &mallory, admin_on(&helper))
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    // Without the forbid, Admin on the folder is hers to hand out.
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/policies/{policy}"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app
        .post("/role-bindings", &mallory, admin_on(&helper))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Nor can a caller hand out what it holds only from its network: a permit that holds from the
/// loopback alone is not the caller's to give to an account that would hold it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cannot_hand_out_what_it_holds_only_from_its_network() {
    let app = spawn_app(Db::Sqlite).await;
    let (issuer, issuer_id) = crate::authz::custom_key(&app, &["api_key.create"]).await;
    let (_, target) = crate::authz::custom_key(&app, &["user.create"]).await;
    let from_here = format!(
        r#"permit(principal == Flowgate::ServiceAccount::"{issuer_id}", action == Flowgate::Action::"user.create", resource)
           when {{ context has source_ip && context.source_ip.isInRange(ip("127.0.0.0/8")) }};"#
    );
    crate::authz::policy(&app, "loopback", &from_here).await;
    let user = json!({"email": "eve@example.com", "display_name": "Eve"});
    let (status, body) = app.post("/users", &issuer, user).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "from here, the issuer may: {body}"
    );
    let (status, body) = issue_key(&app, &issuer, &target).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
}

/// A grant on a folder reaches its sub-folders, so the author must hold it there too: a forbid
/// on the author in a sub-folder makes the grant on the parent more than the author holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_on_a_folder_is_refused_when_the_author_is_forbidden_in_a_sub_folder() {
    let app = spawn_app(Db::Sqlite).await;
    let (author, author_id) = crate::authz::custom_key(
        &app,
        &["role_binding.create", "process.read", "folder.read"],
    )
    .await;
    crate::authz::create_role(&app, "Reader", &["process.read"]).await;
    let (_, parent) = app
        .post("/folders", &app.admin_key, json!({"name": "parent"}))
        .await;
    let parent = parent["id"].as_str().unwrap().to_owned();
    let (_, child) = app
        .post(
            &format!("/folders/{parent}/folders"),
            &app.admin_key,
            json!({"name": "child"}),
        )
        .await;
    let child = child["id"].as_str().unwrap().to_owned();
    let (_, elsewhere) = app
        .post("/folders", &app.admin_key, json!({"name": "elsewhere"}))
        .await;
    let elsewhere = elsewhere["id"].as_str().unwrap().to_owned();
    let forbid = format!(
        r#"forbid(principal == Flowgate::ServiceAccount::"{author_id}", action == Flowgate::Action::"process.read", resource in Flowgate::Folder::"{child}");"#
    );
    crate::authz::policy(&app, "not-the-child", &forbid).await;
    let user = app.create_user("reader@example.com").await;
    let bind = |folder: &str| json!({"role": "Reader", "subject": {"type": "user", "id": user}, "scope": {"type": "folder", "id": folder}});
    let (status, body) = app.post("/role-bindings", &author, bind(&parent)).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = app.post("/role-bindings", &author, bind(&elsewhere)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a folder without the forbid: {body}"
    );
}

/// Lists show only what the caller may read, object by object: with a forbid on folder G, G and
/// its processes are absent from `GET /folders` and `GET /processes` (and G's own process
/// list), while the same caller still sees the rest; pages follow the cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_leave_out_what_a_forbid_hides() {
    let app = spawn_app(Db::Sqlite).await;
    let (reader, reader_id) =
        crate::authz::custom_key(&app, &["folder.read", "process.read"]).await;
    let mut visible = Vec::new();
    for name in ["a", "b", "c"] {
        let (_, folder) = app
            .post("/folders", &app.admin_key, json!({"name": name}))
            .await;
        let folder = folder["id"].as_str().unwrap().to_owned();
        let (_, process) = app
            .post(
                &format!("/folders/{folder}/processes"),
                &app.admin_key,
                json!({"name": name}),
            )
            .await;
        visible.push((folder, process["id"].as_str().unwrap().to_owned()));
    }
    let (_, hidden) = app
        .post("/folders", &app.admin_key, json!({"name": "g"}))
        .await;
    let hidden = hidden["id"].as_str().unwrap().to_owned();
    let (_, secret_process) = app
        .post(
            &format!("/folders/{hidden}/processes"),
            &app.admin_key,
            json!({"name": "g"}),
        )
        .await;
    let secret_process = secret_process["id"].as_str().unwrap().to_owned();
    let forbid = format!(
        r#"forbid(principal == Flowgate::ServiceAccount::"{reader_id}", action in [Flowgate::Action::"folder.read", Flowgate::Action::"process.read"], resource in Flowgate::Folder::"{hidden}");"#
    );
    crate::authz::policy(&app, "hide-g", &forbid).await;

    let all = |path: &'static str| {
        let app = &app;
        let reader = &reader;
        async move {
            let mut ids = Vec::new();
            let mut url = format!("{path}?limit=1");
            loop {
                let (status, page) = app.get(&url, reader).await;
                assert_eq!(status, StatusCode::OK, "{page}");
                ids.extend(
                    page["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i["id"].as_str().unwrap().to_owned()),
                );
                match page["next_cursor"].as_str() {
                    Some(cursor) => url = format!("{path}?limit=1&after={cursor}"),
                    None => break ids,
                }
            }
        }
    };
    let folders = all("/folders").await;
    let processes = all("/processes").await;
    assert!(!folders.contains(&hidden), "{folders:?}");
    assert!(!processes.contains(&secret_process), "{processes:?}");
    for (folder, process) in &visible {
        assert!(
            folders.contains(folder) && processes.contains(process),
            "positive control"
        );
    }
    // The Admin, whom the forbid does not name, sees everything.
    let (_, page) = app.get("/processes", &app.admin_key).await;
    assert!(page.to_string().contains(&secret_process));
}

/// A tenant cannot make a page of processes cost the process its memory: a definition is at
/// most 64 KiB as JSON (an oversized one is refused and nothing is stored), and a page ends once
/// its definitions pass 1 MiB, with a cursor to the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_definitions_and_their_pages_are_bounded() {
    let app = spawn_app(Db::Sqlite).await;
    // Read back, `[0,0,…]` takes sixteen times its text.
    let zeros = |n: usize| json!({"steps": vec![0; n]});
    let (status, body) = app
        .post(
            "/processes",
            &app.admin_key,
            json!({"name": "huge", "definition": zeros(40_000)}),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["errors"][0]["field"], "definition", "{body}");
    let (_, page) = app.get("/processes", &app.admin_key).await;
    assert_eq!(page["items"], json!([]), "nothing was stored");
    // Twenty definitions of about 60 KiB: no page holds more than 1 MiB of them (plus one).
    let mut created = Vec::new();
    for i in 0..20 {
        let (status, body) = app
            .post(
                "/processes",
                &app.admin_key,
                json!({"name": format!("p{i}"), "definition": zeros(30_000)}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        created.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, body) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/processes/{}", created[0]),
            &app.admin_key,
            Some(json!({"definition": zeros(40_000)})),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let mut seen = Vec::new();
    let mut url = "/processes?limit=500".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = app.get(&url, &app.admin_key).await;
        assert_eq!(status, StatusCode::OK);
        let items = page["items"].as_array().unwrap();
        assert!(
            items.len() <= 18,
            "a page of {} large definitions",
            items.len()
        );
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("/processes?limit=500&after={cursor}"),
            None => break,
        }
    }
    assert!(pages >= 2, "the definitions did not fit one page");
    seen.sort();
    created.sort();
    assert_eq!(seen, created, "paging on reaches every process once");
}

/// Onboarding survives a caller that goes away: when the future of `create_tenant` is dropped
/// mid-way (a client disconnecting drops its request's future so), the tenant still ends
/// active, never half-made with its slug answering 409 forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_is_not_cut_short_by_a_caller_that_goes_away() {
    for db in [Db::Sqlite, Db::Postgres] {
        let app = spawn_app(db).await;
        let slug = crate::helpers::unique_slug("hasty");
        let new = flowgate::platform::NewTenant {
            slug: flowgate::tenancy::Slug::parse(&slug).unwrap(),
            name: "Hasty".to_owned(),
            environment: flowgate::tenancy::Environment::Dev,
        };
        let meta = flowgate::audit::RequestMeta::default();
        let operator = flowgate::identity::operator::OperatorAuthority::console();
        let onboarding = flowgate::platform::create_tenant(&app.state, &operator, new, &meta);
        // Dropped after its first poll, which hands the work to its task (2 ms was at times
        // long enough for SQLite to finish it all, and the premise failed).
        let cut = tokio::time::timeout(std::time::Duration::ZERO, onboarding).await;
        assert!(cut.is_err(), "the caller gave up before the answer");
        let mut status = String::new();
        for _ in 0..100 {
            let response = app
                .client
                .get(app.url(&format!("/api/v1/platform/tenants/{slug}")))
                .bearer_auth(&app.operator_token)
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = response.json().await.unwrap();
            status = body["status"].as_str().unwrap_or("absent").to_owned();
            // Absent: the task has not claimed the slug yet.
            if status != "provisioning" && status != "absent" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            status, "active",
            "{db:?}: onboarding finished without its caller"
        );
    }
}
