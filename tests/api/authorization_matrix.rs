//! Every operation of the OpenAPI document refuses a caller without credentials (401) and a
//! caller without the permission (403); only the declared public operations answer anyone.
//! And every operation × every built-in role × a scope in and out of range answers as the
//! documented catalogue says.

use std::collections::{HashMap, HashSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::on_both_databases;

/// The only operations that need no credentials.
const PUBLIC: &[(&str, &str)] = &[("get", "/healthz"), ("get", "/readyz")];

struct Operation {
    method: Method,
    /// The documented path, with `{placeholders}`.
    template: String,
    public: bool,
    /// Under a tenant but before any credential: signing in and out (`/t/{tenant}/auth/…`).
    sign_in: bool,
    /// Any authenticated caller of the tenant may call it, about itself (`x-flowgate-self-service`).
    self_service: bool,
    /// The permission its handler's signature requires (`x-flowgate-action`, written from the
    /// `Authorized<A, T>` argument), for tenant operations.
    action: Option<String>,
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
            let sign_in = path.starts_with("/t/{tenant}/auth/")
                || path.starts_with("/t/{tenant}/.well-known/");
            if sign_in {
                // Signing in needs no credential; the WebAuthn ceremonies need the session
                // cookie alone.
                let session_only = op["security"] == json!([{"session": []}]);
                assert!(
                    !secured || session_only,
                    "{method} {path}: a sign-in operation is public or needs only the session"
                );
            } else {
                assert_eq!(
                    !secured, public,
                    "{method} {path}: only the declared public operations may go without security"
                );
            }
            let action = op["x-flowgate-action"].as_str().map(str::to_owned);
            let self_service = op["x-flowgate-self-service"] == true;
            if path.starts_with("/t/") && !sign_in && !self_service {
                let action = action.as_deref().unwrap_or_else(|| {
                    panic!("{method} {path} must document the permission it requires")
                });
                let description = op["description"].as_str().unwrap_or_default();
                assert!(
                    description.contains(&format!("Requires `{action}`")),
                    "{method} {path}: the description names the permission"
                );
            }
            ops.push(Operation {
                method: method.to_uppercase().parse().unwrap(),
                template: path.clone(),
                public,
                sign_in,
                self_service,
                action,
            });
        }
    }
    assert!(ops.len() >= 50, "the document lists every operation");
    // Deletions last, so that the objects other operations use still exist.
    ops.sort_by_key(|op| op.method == Method::DELETE);
    ops
}

/// Real objects of the tenant for the operations' `{id}` and `{name}`.
struct Objects {
    folder: String,
    other_folder: String,
    by_prefix: Vec<(&'static str, String)>,
    role: String,
    /// A secret in `folder`, for `/secrets/{name}`.
    secret: String,
}

async fn create(app: &TestApp, path: &str, body: Value) -> String {
    let (status, created) = app.post(path, &app.admin_key, body).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {created}");
    created["id"].as_str().unwrap().to_owned()
}

async fn objects(app: &TestApp) -> Objects {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let folder = create(app, "/folders", json!({"name": "in scope"})).await;
    let other_folder = create(app, "/folders", json!({"name": "out of scope"})).await;
    let process = create(
        app,
        &format!("/folders/{folder}/processes"),
        json!({"name": "p"}),
    )
    .await;
    let user = app.create_user(&format!("u-{unique}@example.com")).await;
    let group = create(app, "/groups", json!({"name": format!("g-{unique}")})).await;
    let account = create(
        app,
        "/service-accounts",
        json!({"name": format!("sa-{unique}")}),
    )
    .await;
    let binding = create(app, "/role-bindings", json!({"role": "Viewer", "subject": {"type": "user", "id": user}, "scope": {"type": "tenant"}})).await;
    let (_, key) = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "k", "service_account_id": account}),
        )
        .await;
    let policy = create(app, "/policies", json!({"name": format!("p-{unique}"), "text": "forbid(principal, action == Flowgate::Action::\"secret.read\", resource) when { context.environment == \"prod\" };"})).await;
    let provider = create(
        app,
        "/identity-providers",
        json!({"name": format!("idp-{unique}"), "kind": "oidc", "issuer": "https://idp.example.com",
               "client_id": "c", "client_secret": "s"}),
    )
    .await;
    let client = create(
        app,
        "/clients",
        json!({"name": "c", "service_account_id": account}),
    )
    .await;
    let secret = format!("s-{unique}");
    create(
        app,
        &format!("/folders/{folder}/secrets"),
        json!({"name": secret, "value": "v"}),
    )
    .await;
    let role = format!("Custom {unique}");
    let (status, body) = app
        .post(
            "/roles",
            &app.admin_key,
            json!({"name": role, "actions": ["task.read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Objects {
        by_prefix: vec![
            ("/users/", user),
            ("/groups/", group),
            ("/service-accounts/", account),
            ("/role-bindings/", binding),
            ("/api-keys/", key["id"].as_str().unwrap().to_owned()),
            ("/policies/", policy),
            ("/folders/", folder.clone()),
            ("/processes/", process),
            ("/identity-providers/", provider),
            ("/clients/", client),
        ],
        folder,
        other_folder,
        role,
        secret,
    }
}

impl Objects {
    fn path(&self, app: &TestApp, template: &str) -> String {
        let name = if template.contains("/secrets/{name}") {
            &self.secret
        } else {
            &self.role
        };
        let mut path = template
            .replace("{tenant}", &app.tenant)
            .replace("{slug}", &app.tenant)
            .replace("{name}", name);
        if let Some(id) = self
            .by_prefix
            .iter()
            .find(|(prefix, _)| template.contains(&format!("{prefix}{{id}}")))
        {
            path = path.replace("{id}", &id.1);
        }
        path
    }
}

async fn send(app: &TestApp, op: &Operation, path: &str, key: Option<&str>) -> StatusCode {
    let mut request = app.client.request(op.method.clone(), app.url(path));
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
        let objects = objects(&app).await;
        for op in operations(&app).await.iter().filter(|op| !op.public && !op.sign_in) {
            let path = objects.path(&app, &op.template);
            assert_eq!(send(&app, op, &path, None).await, StatusCode::UNAUTHORIZED, "{} {path}", op.method);
        }
    }

    async fn every_tenant_operation_refuses_a_caller_without_the_permission(app) {
        let objects = objects(&app).await;
        let no_role = app.key_with_role(None).await;
        for op in operations(&app).await.iter().filter(|op| op.template.starts_with("/t/") && !op.sign_in) {
            let path = objects.path(&app, &op.template);
            let status = send(&app, op, &path, Some(&no_role)).await;
            if op.self_service {
                // About the caller themselves: answered, never refused (a service account has
                // no session to end, so that is 404).
                assert!(status.is_success() || status == StatusCode::NOT_FOUND, "{} {path}: {status}", op.method);
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{} {path}", op.method);
            }
        }
    }

    async fn operator_operations_refuse_tenant_credentials(app) {
        let objects = objects(&app).await;
        for op in operations(&app).await.iter().filter(|op| !op.public && !op.sign_in && !op.template.starts_with("/t/")) {
            let path = objects.path(&app, &op.template);
            assert_eq!(send(&app, op, &path, Some(&app.admin_key)).await, StatusCode::UNAUTHORIZED, "{} {path}", op.method);
        }
    }

    async fn public_operations_answer_anyone(app) {
        let objects = objects(&app).await;
        for op in operations(&app).await.iter().filter(|op| op.public) {
            let path = objects.path(&app, &op.template);
            assert_eq!(send(&app, op, &path, None).await, StatusCode::OK, "{} {path}", op.method);
        }
    }

    async fn denied_calls_are_audited_with_the_action(app) {
        let viewer = app.key_with_role(Some("Viewer")).await;
        let (status, _) = app.post("/service-accounts", &viewer, json!({"name": "nope"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let events = app.audit_events().await;
        let denied = events.iter().rev().find(|e| e["decision"] == "deny").expect("a denial event");
        assert_eq!(denied["action"], "service_account.create");
        assert_eq!(denied["status"], 403);
        assert_eq!(denied["actor_type"], "service_account");
        assert_eq!(denied["source_ip"], "127.0.0.1");
        assert_eq!(denied["details"]["policies"], "no policy permits this");
    }
}

/// A service account bound to `role` on `scope` (`None`: the tenant; `Some(folder)`), and its key.
async fn key_for(app: &TestApp, role: &str, scope: Option<&str>) -> String {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let account = create(
        app,
        "/service-accounts",
        json!({"name": format!("m-{unique}")}),
    )
    .await;
    let scope = match scope {
        None => json!({"type": "tenant"}),
        Some(folder) => json!({"type": "folder", "id": folder}),
    };
    create(app, "/role-bindings", json!({"role": role, "subject": {"type": "service_account", "id": account}, "scope": scope})).await;
    let (_, key) = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "m", "service_account_id": account}),
        )
        .await;
    key["key"].as_str().unwrap().to_owned()
}

/// The built-in roles' actions as the API documents them (conditional grants hold in a `dev`
/// tenant, which the test tenant is).
async fn documented_roles(app: &TestApp) -> HashMap<String, HashSet<String>> {
    let (status, roles) = app.get("/roles", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    roles["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["builtin"] == true)
        .map(|r| {
            let mut actions: HashSet<String> = r["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            for grant in r["conditional"].as_array().unwrap() {
                actions.extend(
                    grant["actions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_owned()),
                );
            }
            (r["name"].as_str().unwrap().to_owned(), actions)
        })
        .collect()
}

/// The built-in roles' actions as the README's catalogue table shows them (a `✓`, or a grant
/// outside production, in the role's column).
fn readme_roles() -> HashMap<String, HashSet<String>> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut lines = readme.lines().skip_while(|l| !l.starts_with("| action |"));
    let header: Vec<String> = lines
        .next()
        .expect("the README has the catalogue table")
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect();
    let mut roles: HashMap<String, HashSet<String>> = HashMap::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let action = cells[1].trim_matches('`');
        for (name, cell) in header.iter().zip(&cells).skip(3) {
            let role = roles.entry(name.clone()).or_default();
            if !cell.is_empty() {
                role.insert(action.to_owned());
            }
        }
    }
    roles.retain(|name, _| !name.is_empty());
    roles
}

on_both_databases! {
    async fn every_operation_by_every_builtin_role_in_and_out_of_scope_follows_the_catalogue(app) {
        let roles = documented_roles(&app).await;
        assert_eq!(roles.len(), 5);
        assert_eq!(
            roles,
            readme_roles(),
            "the README's catalogue is the served one"
        );
        let ops = operations(&app).await;
        for (role, actions) in &roles {
            for scope in ["tenant", "folder", "other folder"] {
                // Fresh objects for each round: the allowed deletions of the last round removed some.
                let objects = objects(&app).await;
                let key = match scope {
                    "tenant" => key_for(&app, role, None).await,
                    "folder" => key_for(&app, role, Some(&objects.folder)).await,
                    _ => key_for(&app, role, Some(&objects.other_folder)).await,
                };
                for op in ops.iter().filter(|op| op.template.starts_with("/t/") && op.action.is_some()) {
                    let action = op.action.as_deref().unwrap();
                    // What the operation decides on: the process or folder of its path, else the tenant.
                    let in_folder = op.template.contains("/processes/{id}")
                        || op.template.contains("/folders/{id}")
                        || op.template.contains("/secrets/{name}");
                    let covered = match scope {
                        "tenant" => true,
                        "folder" => in_folder,
                        _ => false,
                    };
                    let allowed = covered && actions.contains(action);
                    let path = objects.path(&app, &op.template);
                    let status = send(&app, op, &path, Some(&key)).await;
                    if allowed {
                        assert!(
                            status != StatusCode::FORBIDDEN
                                && status != StatusCode::UNAUTHORIZED
                                && !status.is_server_error(),
                            "{role} on {scope}: {} {path} ({action}) should be allowed, got {status}",
                            op.method
                        );
                    } else {
                        assert_eq!(
                            status,
                            StatusCode::FORBIDDEN,
                            "{role} on {scope}: {} {path} ({action})",
                            op.method
                        );
                    }
                }
            }
        }
    }
}
