//! The tenant's second-factor policy, step-up for sensitive actions, passkey removal and reset,
//! and actions reserved for people — each with the way around it that must fail.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::helpers::{Db, Options, TestApp, assert_problem, spawn_app_with};
use crate::oidc_peer::Browser;
use crate::passkeys::{BOB, assertion, bob_claims, enroll, passkey_app, step};
use crate::signin::{ADA, ada_claims, bind_group, group_id, provider};

/// A tenant API call with the browser's cookie and this server's `Origin`.
pub(crate) async fn call(
    app: &TestApp,
    browser: &Browser,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value, Option<String>) {
    let mut request = browser
        .client
        .request(method, app.tenant_url(path))
        .header("Origin", &app.base);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        challenge,
    )
}

/// The token-exchange request of `browser`'s session cookie, from this server's origin.
async fn exchange_session(app: &TestApp, browser: &Browser) -> reqwest::Response {
    browser
        .client
        .post(app.url(&format!("/t/{}/auth/token", app.tenant)))
        .header("Origin", &app.base)
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            (
                "subject_token_type",
                "urn:flowgate:params:oauth:token-type:session",
            ),
        ])
        .send()
        .await
        .unwrap()
}

async fn settings(app: &TestApp, changes: Value) -> (StatusCode, Value) {
    app.call(Method::PATCH, "/settings", &app.admin_key, Some(changes))
        .await
}

/// Asserts with `key` in `browser`'s session.
async fn assert_with(app: &TestApp, browser: &Browser, key: &mut SoftPasskey) {
    let signed = assertion(app, browser, key, &app.base).await;
    let (status, body) = step(app, browser, "authenticate/finish", Some(signed)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Makes every session's sign-in and last passkey assertion old ones.
pub(crate) const AGE_ASSERTIONS: &str = "UPDATE sessions SET \
    strong_auth_at = '2020-01-01T00:00:00+00:00', \
    passkey_asserted_at = '2020-01-01T00:00:00+00:00'";

/// Makes every session's last strong proof an old one.
async fn age_assertions(app: &TestApp) {
    app.tenant_sql(AGE_ASSERTIONS).await;
}

fn binding(role: &str, group: &Value) -> Value {
    json!({"role": role, "subject": {"type": "group", "id": group}, "scope": {"type": "tenant"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mfa_holds_until_the_assertion_and_step_up_guards_sensitive_actions() {
    let app = passkey_app().await;
    let (idp, _peer) = provider(
        &app,
        "generic",
        &[(ADA, ada_claims()), (BOB, bob_claims())],
        json!({}),
    )
    .await;
    let ada = Browser::new(&app);
    ada.sign_in_ok(&app, &idp, ADA).await;
    bind_group(&app, "finance", "Admin").await;
    let (status, body) = settings(&app, json!({"mfa": "sometimes"})).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, body) = settings(&app, json!({"mfa": "required", "step_up_minutes": 5})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mfa"], "required");

    // The signed-in session now owes its second factor: only /me, the list of passkeys and the
    // ceremonies answer; everything else is 401 mfa_required with what to do.
    let (status, body, www) = call(&app, &ada, Method::GET, "/users", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "mfa_required");
    assert_eq!(
        body["challenge"]["authenticate"],
        format!("/t/{}/auth/webauthn/authenticate/start", app.tenant)
    );
    assert!(www.unwrap().contains("insufficient_user_authentication"));
    let (status, body, _) = call(&app, &ada, Method::GET, "/me/sessions", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "mfa_required");
    let (status, me, _) = call(&app, &ada, Method::GET, "/me", None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        (
            me["auth"]["mfa"].as_bool(),
            me["auth"]["mfa_owed"].as_bool()
        ),
        (Some(false), Some(true))
    );
    let (status, list, _) = call(&app, &ada, Method::GET, "/me/credentials", None).await;
    assert_eq!((status, list["items"].clone()), (StatusCode::OK, json!([])));
    // Nor can the session be turned into a script's token.
    let response = exchange_session(&app, &ada).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // Enrolling the first passkey is open; it does not stand in for the assertion.
    let mut key = SoftPasskey::new(true);
    let (status, first) = enroll(&app, &ada, &mut key).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, body, _) = call(&app, &ada, Method::GET, "/users", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "mfa_required");
    // A second passkey only after asserting with the first (a stolen IdP password cannot add
    // the thief's authenticator).
    let (status, body) = step(&app, &ada, "register/start", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");

    assert_with(&app, &ada, &mut key).await;
    let (status, users, _) = call(&app, &ada, Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::OK, "{users}");

    // Step-up: a fresh assertion allows a role change; an old one is 401 step_up_required.
    let finance = json!(group_id(&app, "finance").await);
    let (status, body, _) = call(
        &app,
        &ada,
        Method::POST,
        "/role-bindings",
        Some(binding("Viewer", &finance)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    age_assertions(&app).await;
    let (status, body, www) = call(
        &app,
        &ada,
        Method::POST,
        "/role-bindings",
        Some(binding("Viewer", &finance)),
    )
    .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "step_up_required");
    assert_eq!(body["challenge"]["max_age_seconds"], 300);
    assert!(www.unwrap().contains("max_age=300"));
    // Reading stays open with an old assertion; API keys are never asked to step up.
    let (status, _, _) = call(&app, &ada, Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .post(
            "/role-bindings",
            &app.admin_key,
            binding("Auditor", &finance),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_with(&app, &ada, &mut key).await;
    let (status, body, _) = call(
        &app,
        &ada,
        Method::PATCH,
        "/settings",
        Some(json!({"step_up_minutes": 10})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Removing a passkey: never the last while MFA is required, and only with a fresh
    // assertion.
    let first_path = format!("/me/credentials/{}", first["id"].as_str().unwrap());
    let (status, body, _) = call(&app, &ada, Method::DELETE, &first_path, None).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
    let mut spare = SoftPasskey::new(true);
    let (status, second) = enroll(&app, &ada, &mut spare).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    age_assertions(&app).await;
    let (status, body, _) = call(&app, &ada, Method::DELETE, &first_path, None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "step_up_required");
    // Nor is another authenticator added on an old assertion.
    let (status, body) = step(&app, &ada, "register/start", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "passkey_refused");
    // A second device of Ada's that asserted with the passkey being removed is signed out.
    let phone = Browser::new(&app);
    phone.sign_in_ok(&app, &idp, ADA).await;
    assert_with(&app, &phone, &mut key).await;
    assert_with(&app, &ada, &mut spare).await;
    let (status, body, _) = call(&app, &ada, Method::DELETE, &first_path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _, _) = call(&app, &phone, Method::GET, "/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the other session ended");
    let (status, _, _) = call(&app, &ada, Method::GET, "/me", None).await;
    assert_eq!(status, StatusCode::OK, "the remover's own session goes on");
    let (status, body, _) = call(&app, &ada, Method::DELETE, &first_path, None).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");

    // Bob, signed in without a passkey, owes one too; he cannot touch Ada's.
    let bob = Browser::new(&app);
    bob.sign_in_ok(&app, &idp, BOB).await;
    let second_path = format!("/me/credentials/{}", second["id"].as_str().unwrap());
    let (status, body, _) = call(&app, &bob, Method::DELETE, &second_path, None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "mfa_required");
    // Under `optional`, Bob (no passkey) is not asked; Ada (a passkey) still is, in a new
    // session.
    let (status, _) = settings(&app, json!({"mfa": "optional"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = call(&app, &bob, Method::GET, "/me/sessions", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ada_again = Browser::new(&app);
    ada_again.sign_in_ok(&app, &idp, ADA).await;
    let (status, body, _) = call(&app, &ada_again, Method::GET, "/me/sessions", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "mfa_required");

    // An administrator resets Ada's passkeys (a lost authenticator): they are gone and every
    // session of hers has ended.
    let ada_id = me["id"].as_str().unwrap();
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/users/{ada_id}/credentials"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for browser in [&ada, &ada_again] {
        let (status, _, _) = call(&app, browser, Method::GET, "/me", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/users/{}/credentials", uuid::Uuid::new_v4()),
            &app.admin_key,
            None,
        )
        .await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        app.tenant_rows("SELECT COUNT(*) AS n FROM passkeys").await[0]["n"],
        0
    );

    // On record: the step-up refusal, the removal, the reset.
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e["action"] == "role_binding.create"
        && e["status"] == 401
        && e["details"]["policies"].to_string().contains("step-up")));
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "auth.passkey_remove" && e["status"] == 204)
    );
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "auth.passkey_remove"
                && e["details"]["other_sessions_ended"] == 1)
    );
    assert!(events.iter().any(|e| e["action"] == "passkey.reset"
        && e["details"]["passkeys_removed"] == 1
        && e["details"]["sessions_ended"] == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_a_tenant_reserves_for_people_refuse_api_keys() {
    let app = spawn_app_with(Db::Sqlite, Options::default()).await;
    let (status, body) = settings(
        &app,
        json!({"human_only_actions": ["user.create", "no.such"]}),
    )
    .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["errors"][0]["field"], "human_only_actions[1]");
    // People of group `finance`, signing in through the provider, are Admins.
    app.post("/groups", &app.admin_key, json!({"name": "finance"}))
        .await;
    bind_group(&app, "finance", "Admin").await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let (status, body) = settings(
        &app,
        json!({"human_only_actions": ["user.create"], "step_up_minutes": 0}),
    )
    .await;
    assert_eq!(
        (status, body["human_only_actions"].clone()),
        (StatusCode::OK, json!(["user.create"])),
        "{body}"
    );
    let user = json!({"email": "eve@acme.example", "display_name": "Eve"});
    let (status, body) = app.post("/users", &app.admin_key, user.clone()).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("only people"),
        "{body}"
    );
    // Other actions are untouched. The key cannot lift the mark (a grant to itself), even
    // holding `settings.manage`; a person can, and that restores the key's grant.
    let (status, _) = app.get("/users", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = settings(&app, json!({"human_only_actions": []})).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("Only a person"),
        "{body}"
    );
    let (status, body) = app.post("/users", &app.admin_key, user.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Nor can it hand what it may not do to others (people of a group it makes Admin, say).
    let (_, interns) = app
        .post("/groups", &app.admin_key, json!({"name": "interns"}))
        .await;
    let binding = json!({"role": "Admin", "subject": {"type": "group", "id": interns["id"]},
                         "scope": {"type": "tenant"}});
    let (status, body) = app.post("/role-bindings", &app.admin_key, binding).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("user.create"),
        "{body}"
    );
    let browser = Browser::new(&app);
    browser.sign_in_ok(&app, &idp, ADA).await;
    let lift = json!({"human_only_actions": []});
    let (status, body, _) = call(&app, &browser, Method::PATCH, "/settings", Some(lift)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.post("/users", &app.admin_key, user).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e["action"] == "user.create"
        && e["status"] == 403
        && e["details"]["policies"].to_string().contains("people")));
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "settings.manage" && e["status"] == 403),
        "the key's attempt is on record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_own_mfa_counts_only_where_the_tenant_trusts_it() {
    let app = passkey_app().await;
    let mut ada = ada_claims();
    ada["amr"] = json!(["pwd", "mfa"]);
    let bob =
        json!({"email": "bob@acme.example", "email_verified": true, "name": "Bob", "amr": ["pwd"]});
    let (idp, _peer) = provider(
        &app,
        "generic",
        &[(ADA, ada), (BOB, bob)],
        json!({"trusted_mfa": ["mfa"]}),
    )
    .await;
    let (status, _) = settings(&app, json!({"mfa": "required"})).await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/identity-providers/{idp}");
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            &app.admin_key,
            Some(json!({"trusted_mfa": ["has space"]})),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // Ada's provider login was multi-factor and the tenant trusts that: no passkey asked.
    let ada_browser = Browser::new(&app);
    ada_browser.sign_in_ok(&app, &idp, ADA).await;
    let (status, body, _) = call(&app, &ada_browser, Method::GET, "/me/sessions", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, me, _) = call(&app, &ada_browser, Method::GET, "/me", None).await;
    assert_eq!(me["auth"]["mfa"], true);
    // It completes the sign-in but is no passkey assertion: sensitive actions still ask for one.
    bind_group(&app, "finance", "Admin").await;
    let (status, body, _) = call(
        &app,
        &ada_browser,
        Method::PATCH,
        "/settings",
        Some(json!({"step_up_minutes": 10})),
    )
    .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "step_up_required");
    // Bob's was a password only.
    let bob_browser = Browser::new(&app);
    bob_browser.sign_in_ok(&app, &idp, BOB).await;
    let (status, body, _) = call(&app, &bob_browser, Method::GET, "/me/sessions", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "mfa_required");

    // Without the trust, the same multi-factor login owes a passkey.
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            &app.admin_key,
            Some(json!({"trusted_mfa": []})),
        )
        .await;
    assert_eq!(
        (status, body["trusted_mfa"].clone()),
        (StatusCode::OK, json!([])),
        "{body}"
    );
    // Ada's session, MFA-complete only by the provider's word, owes a passkey again.
    let (status, body, _) = call(&app, &ada_browser, Method::GET, "/me/sessions", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "mfa_required");
    let again = Browser::new(&app);
    again.sign_in_ok(&app, &idp, ADA).await;
    let (status, body, _) = call(&app, &again, Method::GET, "/me/sessions", None).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "mfa_required");

    let logins: Vec<Value> = app
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e["action"] == "auth.login" && e["status"] == 303)
        .collect();
    let trusted: Vec<bool> = logins
        .iter()
        .map(|e| e["details"]["mfa_by_provider"].as_bool().unwrap())
        .collect();
    assert_eq!(trusted, [true, false, false]);
    assert!(
        app.audit_events()
            .await
            .iter()
            .any(|e| e["action"] == "identity_provider.manage"
                && e["details"]["trusted_mfa"] == json!(["mfa"]))
    );
    assert!(
        app.audit_events()
            .await
            .iter()
            .any(|e| e["action"] == "identity_provider.manage"
                && e["details"]["sessions_mfa_withdrawn"] == 1),
        "Ada's session lost the provider's MFA"
    );
}

/// Ada, an Admin (her provider's group `finance` is bound to it), signed in through the test
/// provider with a passkey enrolled, in a tenant with `mfa_settings`, having asserted with it.
struct Ada {
    app: TestApp,
    idp: String,
    _peer: crate::oidc_peer::OidcPeer,
    ada: Browser,
    key: SoftPasskey,
}

async fn ada_asserted(mfa_settings: Value) -> Ada {
    let app = passkey_app().await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let ada = Browser::new(&app);
    ada.sign_in_ok(&app, &idp, ADA).await;
    bind_group(&app, "finance", "Admin").await;
    let mut key = SoftPasskey::new(true);
    let (status, body) = enroll(&app, &ada, &mut key).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = settings(&app, mfa_settings).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_with(&app, &ada, &mut key).await;
    Ada {
        app,
        idp,
        _peer,
        ada,
        key,
    }
}

/// `thief` asks to sign its person out everywhere; `ada`, the person's session that passed her
/// passkey, lives on.
async fn logs_out_only_itself(app: &TestApp, thief: &Browser, ada: &Browser) {
    let logout = app.url(&format!("/t/{}/auth/logout?everywhere=true", app.tenant));
    let response = thief
        .client
        .post(&logout)
        .header("Origin", &app.base)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (status, me, _) = call(app, ada, Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::OK, "Ada's own session lives: {me}");
}

/// The live sessions of `browser`'s person, as it lists them.
async fn my_sessions(app: &TestApp, browser: &Browser) -> Vec<Value> {
    let (_, list, _) = call(app, browser, Method::GET, "/me/sessions", None).await;
    list["items"].as_array().unwrap().clone()
}

/// A session that has not passed the person's passkey (an identity-provider password is all it
/// took) cannot end the person's other sessions, whether the tenant requires MFA or not:
/// signing out everywhere ends only itself, and ending another session is 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_owing_its_passkey_signs_out_only_itself() {
    let Ada {
        app,
        idp,
        _peer,
        ada,
        key: _,
    } = ada_asserted(json!({"mfa": "required"})).await;

    let thief = Browser::new(&app);
    thief.sign_in_ok(&app, &idp, ADA).await;
    logs_out_only_itself(&app, &thief, &ada).await;
    let (status, _, _) = call(&app, &thief, Method::GET, "/me", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the thief's session ended"
    );

    // Under `off` no session owes a passkey, yet Ada has one: the same holds.
    let (status, body) = settings(&app, json!({"mfa": "off"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let own = my_sessions(&app, &ada).await;
    let own = own.iter().find(|s| s["current"] == true).unwrap()["id"].clone();
    let thief = Browser::new(&app);
    thief.sign_in_ok(&app, &idp, ADA).await;
    let path = format!("/me/sessions/{}", own.as_str().unwrap());
    let (status, body, _) = call(&app, &thief, Method::DELETE, &path, None).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    // Nor through the administrators' routes, which Ada's role (Admin) opens to her.
    let (_, me, _) = call(&app, &ada, Method::GET, "/me", None).await;
    let user_sessions = format!("/users/{}/sessions", me["id"].as_str().unwrap());
    let one = format!("/sessions/{}", own.as_str().unwrap());
    for path in [&user_sessions, &one] {
        let (status, body, _) = call(&app, &thief, Method::DELETE, path, None).await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    logs_out_only_itself(&app, &thief, &ada).await;
    // Ada's session, which passed her passkey, may end another.
    let other = Browser::new(&app);
    other.sign_in_ok(&app, &idp, ADA).await;
    let listed = my_sessions(&app, &ada).await;
    let another = listed.iter().find(|s| s["current"] == false).unwrap()["id"].clone();
    let path = format!("/me/sessions/{}", another.as_str().unwrap());
    let (status, body, _) = call(&app, &ada, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _, _) = call(&app, &other, Method::GET, "/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "that session ended");
}

/// An access token exchanged for a session has the step-up standing the session had when the
/// token was issued: an assertion the person makes in the browser later does not lend it to a
/// token minted earlier (a script's, perhaps leaked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_steps_up_only_with_assertions_made_before_it_was_issued() {
    let Ada {
        app,
        idp: _,
        _peer,
        ada,
        mut key,
    } = ada_asserted(json!({"mfa": "required", "step_up_minutes": 5})).await;
    age_assertions(&app).await;
    let exchange = || async {
        let response = exchange_session(&app, &ada).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    };
    let earlier = exchange().await;
    assert_with(&app, &ada, &mut key).await;
    let finance = json!(group_id(&app, "finance").await);
    let grant = |role: &str| Some(binding(role, &finance));
    let (status, body) = app
        .call(Method::POST, "/role-bindings", &earlier, grant("Viewer"))
        .await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "step_up_required");
    let later = exchange().await;
    let (status, body) = app
        .call(Method::POST, "/role-bindings", &later, grant("Viewer"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // An assertion after it neither adds to nor takes from the standing it was issued with.
    assert_with(&app, &ada, &mut key).await;
    let (status, body) = app
        .call(Method::POST, "/role-bindings", &later, grant("Auditor"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
