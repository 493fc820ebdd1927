//! Sign-in through a tenant's OpenID providers, against a real provider (npm `oidc-provider`),
//! with the attacks a relying party must refuse.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, assert_problem, spawn_app};
use crate::oidc_peer::{AZURE_DIRECTORY, Browser, CLIENT_ID, CLIENT_SECRET, OidcPeer};

pub(crate) const ADA: &str = "ada-subject-0001";

pub(crate) fn ada_claims() -> Value {
    json!({
        "email": "ada@acme.example",
        "email_verified": true,
        "name": "Ada Lovelace",
        "groups": ["idp-finance", "idp-staff"],
        "department": "finance",
    })
}

/// Configures provider `preset` in Flowgate, then starts the peer that plays it (its redirect
/// URI names the provider's id), and points the provider at the peer.
pub(crate) async fn provider(
    app: &TestApp,
    preset: &str,
    accounts: &[(&str, Value)],
    extra: Value,
) -> (String, OidcPeer) {
    let mut body = json!({
        "name": format!("{preset} IdP"),
        "kind": "oidc",
        "preset": preset,
        "issuer": "http://127.0.0.1:9/placeholder",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "email_domains": ["acme.example"],
        "claim_mappings": {"department": "department"},
        "group_mappings": {"idp-finance": "finance"},
    });
    if preset == "azure_ad" {
        body["issuer"] = json!(format!("http://127.0.0.1:9/{AZURE_DIRECTORY}/v2.0"));
    }
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let (status, created) = app.post("/identity-providers", &app.admin_key, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(!created.to_string().contains(CLIENT_SECRET), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let peer =
        OidcPeer::with_accounts(preset, accounts, created["redirect_uri"].as_str().unwrap()).await;
    let (status, updated) = app
        .call(
            Method::PATCH,
            &format!("/identity-providers/{id}"),
            &app.admin_key,
            Some(json!({"issuer": peer.issuer})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    (id, peer)
}

/// The id of the tenant's group called `name`.
pub(crate) async fn group_id(app: &TestApp, name: &str) -> String {
    let (_, groups) = app.get("/groups", &app.admin_key).await;
    groups["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Binds `role` on the tenant to the group called `name`.
pub(crate) async fn bind_group(app: &TestApp, name: &str, role: &str) {
    let group = group_id(app, name).await;
    let (status, body) = app
        .post(
            "/role-bindings",
            &app.admin_key,
            json!({"role": role, "subject": {"type": "group", "id": group}, "scope": {"type": "tenant"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// The audit events of action `action`, newest last.
async fn events(app: &TestApp, action: &str) -> Vec<Value> {
    app.audit_events()
        .await
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

async fn last_refusal(app: &TestApp) -> String {
    let refusals: Vec<Value> = events(app, "auth.login")
        .await
        .into_iter()
        .filter(|e| e["decision"] == "deny")
        .collect();
    refusals.last().expect("a refused sign-in on record")["details"]["reason"]
        .as_str()
        .unwrap()
        .to_owned()
}

crate::on_both_databases! {
    async fn a_person_signs_in_and_is_provisioned_with_claims_and_groups(app) {
        let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
        let browser = Browser::new(&app);
        let landing = browser.sign_in(&app, &idp, ADA).await;
        assert_eq!(landing.status, StatusCode::SEE_OTHER, "{}", landing.body);
        assert_eq!(
            landing.location.as_deref(),
            Some(format!("/t/{}/auth/login?signed_in=1", app.tenant).as_str())
        );
        // Named after its tenant: signing in to another tenant keeps this one.
        let name = format!("__Host-flowgate-session-{}=", app.tenant);
        let session = landing
            .set_cookies
            .iter()
            .find(|c| c.starts_with(&name))
            .expect("a session cookie");
        for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(session.contains(attribute), "{session} lacks {attribute}");
        }
        assert!(!session.contains("Domain"), "{session}");

        let (status, me) = browser.api(&app, Method::GET, "/me").await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["type"], "user");
        assert_eq!(me["email"], "ada@acme.example");
        assert_eq!(me["name"], "Ada Lovelace");
        assert_eq!(me["attributes"], json!({"department": "finance"}));
        assert_eq!(me["groups"], json!(["finance"]));
        assert_eq!(me["auth"]["method"], "session");
        assert_eq!(me["auth"]["mfa"], false);

        // The audit trail names the user, the provider and the session, and no secret.
        let logins = events(&app, "auth.login").await;
        let login = logins.last().unwrap();
        assert_eq!(login["actor_type"], "user");
        assert_eq!(login["actor_id"], me["id"]);
        assert_eq!(login["details"]["identity_provider"], idp);
        let token = session.split(';').next().unwrap().split_once('=').unwrap().1;
        let trail = app.audit_events().await.iter().map(Value::to_string).collect::<String>();
        assert!(!trail.contains(token) && !trail.contains(CLIENT_SECRET));
        assert!(!trail.contains("code="), "no authorization code in the trail");
        // A request made with the session is audited as the user, with its credential.
        let reads: Vec<Value> = app.audit_events().await.into_iter()
            .filter(|e| e["actor_id"] == me["id"] && e["details"]["credential"] == "session")
            .collect();
        assert!(!reads.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_follow_the_provider_at_every_sign_in() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, peer) = provider(&app, "okta", &[(ADA, ada_claims())], json!({})).await;
    // The mapped group grants reading users, once it exists.
    let browser = Browser::new(&app);
    browser.sign_in_ok(&app, &idp, ADA).await;
    bind_group(&app, "finance", "Viewer").await;
    let (status, _) = browser.api(&app, Method::GET, "/users").await;
    assert_eq!(status, StatusCode::OK);

    // Removed from the group at the provider: the next sign-in takes the access away.
    let mut claims = ada_claims();
    claims["groups"] = json!(["idp-staff"]);
    claims["department"] = Value::Null;
    peer.set_account(ADA, claims).await;
    let again = Browser::new(&app);
    again.sign_in_ok(&app, &idp, ADA).await;
    let (_, me) = again.api(&app, Method::GET, "/me").await;
    assert_eq!(me["groups"], json!([]));
    assert_eq!(me["attributes"], json!({}), "an unmapped claim is removed");
    let (status, body) = again.api(&app, Method::GET, "/users").await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    // The same person, not a second user.
    let (_, users) = app.get("/users", &app.admin_key).await;
    let adas = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["email"] == "ada@acme.example")
        .count();
    assert_eq!(adas, 1);

    // Okta always says whether the address is verified: a token that does not is refused.
    let mut unsaid = ada_claims();
    unsaid.as_object_mut().unwrap().remove("email_verified");
    peer.set_account(ADA, unsaid).await;
    let landing = Browser::new(&app).sign_in(&app, &idp, ADA).await;
    assert_eq!(landing.status, StatusCode::UNAUTHORIZED, "{}", landing.body);
    assert_eq!(last_refusal(&app).await, "email_not_verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_callback_or_one_from_another_browser_is_refused() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;

    // Replay: the same state and code, a second time, from the same browser.
    let browser = Browser::new(&app);
    let first = browser.sign_in(&app, &idp, ADA).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    let replay = browser.land(&first.callback).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.body);
    assert_eq!(last_refusal(&app).await, "unknown_state");

    // Login fixation: a callback begun in the attacker's browser, delivered to the victim's.
    let attacker = Browser::new(&app);
    let callback = attacker.authorize(&app, &idp, ADA).await;
    let victim = Browser::new(&app);
    let landing = victim.land(&callback).await;
    assert_eq!(landing.status, StatusCode::UNAUTHORIZED);
    let problem: Value = serde_json::from_str(&landing.body).unwrap();
    assert_problem(
        landing.status,
        &problem,
        StatusCode::UNAUTHORIZED,
        "sign_in_failed",
    );
    assert_eq!(last_refusal(&app).await, "foreign_browser");
    // The consumed login cannot be finished by its own browser afterwards either.
    assert_eq!(
        attacker.land(&callback).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A state that was never issued.
    let forged = callback.replace("state=", "state=x");
    assert_eq!(
        attacker.land(&forged).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_mismatched_id_tokens_are_refused() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let now = chrono::Utc::now().timestamp();
    let cases = [
        (json!({"sign": "none"}), "alg: none"),
        (
            json!({"sign": "foreign"}),
            "signed by an unpublished key with a published kid",
        ),
        (
            json!({"sign": "hs256-public-key"}),
            "HMAC keyed with the public key",
        ),
        (
            json!({"claims": {"aud": "someone-else"}}),
            "another audience",
        ),
        (
            json!({"claims": {"aud": [CLIENT_ID, "other"], "azp": "other"}}),
            "another authorized party",
        ),
        (
            json!({"claims": {"iss": "http://127.0.0.1:1/evil"}}),
            "another issuer",
        ),
        (
            json!({"claims": {"nonce": "not-the-login-nonce"}}),
            "another nonce",
        ),
        (
            json!({"claims": {"exp": now - 3600, "iat": now - 4000}}),
            "expired",
        ),
        (
            json!({"claims": {"iat": now + 3600, "exp": now + 7200}}),
            "issued in the future",
        ),
        (
            json!({"claims": {"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}}),
            "an at_hash of another token",
        ),
        (
            json!({"claims": {"email_verified": false}}),
            "an unverified email",
        ),
    ];
    for (tamper, what) in cases {
        peer.tamper_next_id_token(tamper).await;
        let browser = Browser::new(&app);
        let landing = browser.sign_in(&app, &idp, ADA).await;
        assert_eq!(
            landing.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            landing.body
        );
        assert!(
            !landing
                .set_cookies
                .iter()
                .any(|c| c.starts_with("__Host-flowgate-acme")),
            "{what}: no session"
        );
        let (status, _) = browser.api(&app, Method::GET, "/me").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
    }
    // Nobody was provisioned by a refused token.
    let (_, users) = app.get("/users", &app.admin_key).await;
    assert!(users["items"].as_array().unwrap().is_empty(), "{users}");
    // An untampered token still signs in.
    let browser = Browser::new(&app);
    browser.sign_in_ok(&app, &idp, ADA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_provider_keys_are_fetched_again_at_most_once_a_minute() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    Browser::new(&app).sign_in_ok(&app, &idp, ADA).await;
    let before = peer.stats().await["jwks"].as_u64().unwrap();
    peer.rotate_keys().await;
    // The new kid is unknown: the keys are fetched again, once, and the login succeeds.
    Browser::new(&app).sign_in_ok(&app, &idp, ADA).await;
    assert_eq!(peer.stats().await["jwks"].as_u64().unwrap(), before + 1);
    // Tokens naming unknown keys cannot make Flowgate fetch again within the minute.
    for _ in 0..3 {
        peer.tamper_next_id_token(json!({"header": {"kid": "no-such-key"}}))
            .await;
        let landing = Browser::new(&app).sign_in(&app, &idp, ADA).await;
        assert_eq!(landing.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(peer.stats().await["jwks"].as_u64().unwrap(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_changes_need_the_servers_origin_and_logout_ends_the_session() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let browser = Browser::new(&app);
    browser.sign_in_ok(&app, &idp, ADA).await;
    let logout = app.url(&format!("/t/{}/auth/logout", app.tenant));
    // A cross-site form post carries a foreign Origin; a forged request may carry none.
    for origin in [None, Some("https://evil.example"), Some("null")] {
        let mut request = browser.client.post(&logout);
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?}");
        let mut request = browser
            .client
            .post(app.tenant_url("/users"))
            .json(&json!({"email": "x@acme.example", "display_name": "X"}));
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            StatusCode::FORBIDDEN,
            "{origin:?}"
        );
    }
    let (status, _) = browser.api(&app, Method::GET, "/me").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the session survived the forged requests"
    );

    let response = browser
        .client
        .post(&logout)
        .header("Origin", &app.base)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (status, body) = browser.api(&app, Method::GET, "/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(events(&app, "auth.logout").await.len(), 1);
}

/// Points `app` at a new tenant whose admin runs a provider that signs Ada in; returns the
/// first tenant (slug, admin key) to point it back at, and the new provider (kept alive).
async fn enter_another_tenant(app: &mut TestApp) -> ((String, String), String, OidcPeer) {
    let first = (app.tenant.clone(), app.admin_key.clone());
    let other = crate::helpers::unique_slug("evil");
    app.admin_key = app.create_tenant(&other).await;
    app.tenant = other;
    let (idp, peer) = provider(app, "generic", &[(ADA, ada_claims())], json!({})).await;
    (first, idp, peer)
}

/// A browser keeps one session per tenant: signing in to another tenant (which that tenant's
/// admin can make any browser do, through a provider that approves every login) does not sign
/// it out of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_to_another_tenant_keeps_this_tenant_s_session() {
    let mut app = spawn_app(Db::Sqlite).await;
    let (first_idp, _first_peer) =
        provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let ada = Browser::new(&app);
    ada.sign_in_ok(&app, &first_idp, ADA).await;
    let (status, me) = ada.api(&app, Method::GET, "/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");

    let (first, other_idp, _other_peer) = enter_another_tenant(&mut app).await;
    ada.sign_in_ok(&app, &other_idp, ADA).await;
    let (status, me) = ada.api(&app, Method::GET, "/me").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "signed in to the other tenant: {me}"
    );

    (app.tenant, app.admin_key) = first;
    let (status, me) = ada.api(&app, Method::GET, "/me").await;
    assert_eq!(status, StatusCode::OK, "still signed in to the first: {me}");
}

/// A login in progress at one tenant survives a login begun in the same browser at another
/// (which that tenant's admin can make any browser begin): each tenant binds its logins with a
/// pre-login cookie of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_begun_at_another_tenant_does_not_spoil_one_in_progress() {
    let mut app = spawn_app(Db::Sqlite).await;
    let (first_idp, _first_peer) =
        provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let ada = Browser::new(&app);
    let callback = ada.authorize(&app, &first_idp, ADA).await;

    let (first, other_idp, _other_peer) = enter_another_tenant(&mut app).await;
    ada.redirect(&app.url(&format!("/t/{}/auth/oidc/{other_idp}/login", app.tenant)))
        .await;

    (app.tenant, app.admin_key) = first;
    let landing = ada.land(&callback).await;
    assert_eq!(landing.status, StatusCode::SEE_OTHER, "{}", landing.body);
    let (status, me) = ada.api(&app, Method::GET, "/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
}

/// Deleting a provider ends the sessions it opened: nothing vouches for them any more (a
/// provider is often deleted because it can no longer be trusted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_provider_ends_the_sessions_it_opened() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let ada = Browser::new(&app);
    ada.sign_in_ok(&app, &idp, ADA).await;
    let (status, me) = ada.api(&app, Method::GET, "/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/identity-providers/{idp}"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = ada.api(&app, Method::GET, "/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the session ended");
    let deleted = events(&app, "identity_provider.manage").await;
    assert_eq!(deleted.last().unwrap()["details"]["sessions_ended"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_everywhere_ends_every_session_of_the_user() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let laptop = Browser::new(&app);
    let phone = Browser::new(&app);
    for browser in [&laptop, &phone] {
        browser.sign_in_ok(&app, &idp, ADA).await;
    }
    let response = laptop
        .client
        .post(app.url(&format!("/t/{}/auth/logout?everywhere=true", app.tenant)))
        .header("Origin", &app.base)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        phone.api(&app, Method::GET, "/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    let ended = events(&app, "auth.logout_everywhere").await;
    assert_eq!(ended[0]["details"]["sessions_ended"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_a_replica_remembers_changes_with_its_person_everywhere() {
    //! Replicas authenticate a recently seen session from memory; a change to the person's
    //! groups or to the session made on another replica reaches it before its next request.
    let app = spawn_app(Db::Postgres).await;
    let (replica, _server, _state) = app.replica().await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let browser = Browser::new(&app);
    browser.sign_in_ok(&app, &idp, ADA).await;
    let me_on_replica = || async {
        let response = browser
            .client
            .get(format!("{replica}/t/{}/api/v1/me", app.tenant))
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    // Until the replica's next request hears it, poll briefly.
    let eventually = |expected: fn(&(StatusCode, Value)) -> bool| async move {
        let mut seen = me_on_replica().await;
        for _ in 0..20 {
            if expected(&seen) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            seen = me_on_replica().await;
        }
        seen
    };
    let (status, me) = me_on_replica().await;
    assert_eq!(
        (status, me["groups"].clone()),
        (StatusCode::OK, json!(["finance"]))
    );

    // A membership added through the first replica: the remembered session has the group.
    let (status, auditors) = app
        .post("/groups", &app.admin_key, json!({"name": "auditors"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{auditors}");
    let members = format!("/groups/{}/members", auditors["id"].as_str().unwrap());
    let (status, body) = app
        .post(&members, &app.admin_key, json!({"user_id": me["id"]}))
        .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, me) =
        eventually(|(_, me)| me["groups"].as_array().is_some_and(|g| g.len() == 2)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["groups"].as_array().map(Vec::len), Some(2), "{me}");

    // The person's sessions ended through the first replica: the second refuses the cookie.
    let user = me["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/users/{user}/sessions"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = eventually(|(status, _)| *status == StatusCode::UNAUTHORIZED).await;
    assert_problem(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_cannot_sign_in_and_enabling_them_brings_no_session_back() {
    let app = spawn_app(Db::Postgres).await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let browser = Browser::new(&app);
    browser.sign_in_ok(&app, &idp, ADA).await;
    let (status, me) = browser.api(&app, Method::GET, "/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let user = me["id"].as_str().unwrap().to_owned();
    let (status, disabled) = app
        .call(
            Method::POST,
            &format!("/users/{user}/disable"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{disabled}");
    assert_eq!(disabled["status"], "disabled");
    assert_eq!(
        browser.api(&app, Method::GET, "/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    let landing = Browser::new(&app).sign_in(&app, &idp, ADA).await;
    assert_eq!(landing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(last_refusal(&app).await, "user_disabled");
    let disabling = events(&app, "user.disable").await;
    assert_eq!(disabling.len(), 1, "{disabling:?}");
    assert_eq!(disabling[0]["details"]["sessions_ended"], 1);

    // Enabled again, the person signs in anew; the session they had stays ended.
    let (status, enabled) = app
        .call(
            Method::POST,
            &format!("/users/{user}/enable"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{enabled}");
    assert_eq!(
        browser.api(&app, Method::GET, "/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    let again = Browser::new(&app);
    again.sign_in_ok(&app, &idp, ADA).await;
    assert_eq!(again.api(&app, Method::GET, "/me").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_email_is_not_taken_over_by_a_new_identity() {
    let app = spawn_app(Db::Sqlite).await;
    app.create_user("ada@acme.example").await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let landing = Browser::new(&app).sign_in(&app, &idp, ADA).await;
    assert_eq!(landing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(last_refusal(&app).await, "email_taken");
}

/// A provider vouches for the people of its own email domains: an address it asserts
/// elsewhere (the CFO's, before the CFO's first sign-in) is refused, and nobody is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_vouches_only_for_addresses_at_its_domains() {
    let app = spawn_app(Db::Sqlite).await;
    const MALLORY: &str = "mallory-subject-0002";
    let squatting = json!({"email": "cfo@corp.example", "email_verified": true, "name": "M"});
    let people = [(MALLORY, squatting), (ADA, ada_claims())];
    let (idp, _peer) = provider(&app, "generic", &people, json!({})).await;
    Browser::new(&app).sign_in_ok(&app, &idp, ADA).await;
    let landing = Browser::new(&app).sign_in(&app, &idp, MALLORY).await;
    assert_eq!(landing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(last_refusal(&app).await, "email_outside_domains");
    let made = app
        .tenant_rows("SELECT id FROM users WHERE email = 'cfo@corp.example'")
        .await;
    assert!(made.is_empty(), "{made:?}");

    // Someone the provider signed in before keeps their account when the domains change.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/identity-providers/{idp}"),
            &app.admin_key,
            Some(json!({"email_domains": ["elsewhere.example"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Browser::new(&app).sign_in_ok(&app, &idp, ADA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_ad_admits_its_directories_and_distrusts_overflowing_groups() {
    let app = spawn_app(Db::Sqlite).await;
    let many: Vec<String> = (0..7).map(|i| format!("g{i}")).collect();
    let mut bob = ada_claims();
    bob["email"] = json!("bob@acme.example");
    bob["groups"] = json!(many);
    let (idp, peer) = provider(
        &app,
        "azure_ad",
        &[(ADA, ada_claims()), ("bob-subject", bob)],
        json!({"group_mappings": {"idp-finance": "finance", "g1": "g-one"}}),
    )
    .await;
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/identity-providers/{idp}"),
            &app.admin_key,
            Some(json!({"allowed_tenants": [AZURE_DIRECTORY]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let browser = Browser::new(&app);
    browser.sign_in_ok(&app, &idp, ADA).await;
    assert_eq!(
        browser.api(&app, Method::GET, "/me").await.1["groups"],
        json!(["finance"])
    );

    // Too many groups for the token: `_claim_names` instead of `groups`, and none are granted.
    let browser = Browser::new(&app);
    browser.sign_in_ok(&app, &idp, "bob-subject").await;
    assert_eq!(
        browser.api(&app, Method::GET, "/me").await.1["groups"],
        json!([])
    );
    let logins = events(&app, "auth.login").await;
    assert_eq!(logins.last().unwrap()["details"]["groups_overage"], true);

    // A token of another directory is refused.
    peer.tamper_next_id_token(json!({"claims": {"tid": "00000000-0000-0000-0000-000000000001"}}))
        .await;
    let landing = Browser::new(&app).sign_in(&app, &idp, ADA).await;
    assert_eq!(landing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(last_refusal(&app).await, "wrong_directory");
}

/// A directory other than the peer's default one ([`AZURE_DIRECTORY`]).
const OTHER_DIRECTORY: &str = "5b1d3a2e-7c4f-4e8a-9d6b-0f2a1c3e4d5f";

/// The fields a 422 answer names.
fn problem_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

/// Configures an `azure_ad` provider at Entra ID's multi-tenant `organizations` endpoint that
/// admits `allowed_tenants`, then starts the peer that plays the endpoint and points the
/// provider at it.
async fn azure_organizations_provider(
    app: &TestApp,
    accounts: &[(&str, Value)],
    allowed_tenants: Value,
) -> (String, OidcPeer) {
    let (status, created) = app
        .post(
            "/identity-providers",
            &app.admin_key,
            json!({
                "name": "Entra ID (organizations)",
                "kind": "oidc",
                "preset": "azure_ad",
                "issuer": "http://127.0.0.1:9/organizations/v2.0",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "email_domains": ["acme.example"],
                "group_mappings": {"idp-finance": "finance"},
                "allowed_tenants": allowed_tenants,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let peer =
        OidcPeer::azure_organizations(accounts, created["redirect_uri"].as_str().unwrap()).await;
    let (status, updated) = app
        .call(
            Method::PATCH,
            &format!("/identity-providers/{id}"),
            &app.admin_key,
            Some(json!({"issuer": peer.issuer})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    (id, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_ad_multi_tenant_endpoints_admit_only_the_allowed_directories() {
    //! Entra ID's organizations and common endpoints serve every directory: a token is believed
    //! only with the issuer of the directory its own `tid` names, and only from a directory the
    //! provider lists in `allowed_tenants`, which such a provider must have.
    let app = spawn_app(Db::Sqlite).await;
    for endpoint in ["organizations", "common"] {
        let (status, body) = app
            .post(
                "/identity-providers",
                &app.admin_key,
                json!({
                    "name": "Entra ID, every directory",
                    "kind": "oidc",
                    "preset": "azure_ad",
                    "issuer": format!("https://login.microsoftonline.com/{endpoint}/v2.0"),
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                }),
            )
            .await;
        assert_problem(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
        assert_eq!(problem_fields(&body), ["allowed_tenants"], "{endpoint}");
    }

    let mut bob = ada_claims();
    bob["email"] = json!("bob@acme.example");
    bob["tid"] = json!(OTHER_DIRECTORY);
    let (idp, peer) = azure_organizations_provider(
        &app,
        &[(ADA, ada_claims()), ("bob-subject", bob)],
        // Directory ids compare as UUIDs, whatever their letter case.
        json!([AZURE_DIRECTORY.to_uppercase()]),
    )
    .await;

    // A person of an allowed directory signs in through the organizations endpoint.
    let browser = Browser::new(&app);
    browser.sign_in_ok(&app, &idp, ADA).await;
    let (_, me) = browser.api(&app, Method::GET, "/me").await;
    assert_eq!(me["email"], "ada@acme.example");
    assert_eq!(me["groups"], json!(["finance"]));

    // A person of a directory the provider does not list.
    let landing = Browser::new(&app).sign_in(&app, &idp, "bob-subject").await;
    assert_eq!(landing.status, StatusCode::UNAUTHORIZED, "{}", landing.body);
    assert_eq!(last_refusal(&app).await, "wrong_directory");

    // Tokens whose `iss` is not the issuer of their `tid`: another directory's, the template,
    // and a listed `tid` slipped into the token of an unlisted directory.
    let tampered = [
        (ADA, json!({"iss": peer.directory_issuer(OTHER_DIRECTORY)})),
        (ADA, json!({"iss": peer.directory_issuer("{tenantid}")})),
        ("bob-subject", json!({"tid": AZURE_DIRECTORY})),
    ];
    for (account, claims) in tampered {
        peer.tamper_next_id_token(json!({"claims": claims})).await;
        let landing = Browser::new(&app).sign_in(&app, &idp, account).await;
        assert_eq!(landing.status, StatusCode::UNAUTHORIZED, "{claims}");
        assert_eq!(last_refusal(&app).await, "wrong_issuer", "{claims}");
    }
    let (_, users) = app.get("/users", &app.admin_key).await;
    let emails: Vec<&Value> = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["email"])
        .collect();
    assert_eq!(emails, [&json!("ada@acme.example")], "only Ada was let in");

    // Rotated keys are fetched again for a multi-tenant endpoint too.
    let before = peer.stats().await["jwks"].as_u64().unwrap();
    peer.rotate_keys().await;
    Browser::new(&app).sign_in_ok(&app, &idp, ADA).await;
    assert_eq!(peer.stats().await["jwks"].as_u64().unwrap(), before + 1);

    // Emptying the list is refused as not giving one was.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/identity-providers/{idp}"),
            &app.admin_key,
            Some(json!({"allowed_tenants": []})),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(problem_fields(&body), ["allowed_tenants"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_requires_a_verified_email_in_the_hosted_domain() {
    let app = spawn_app(Db::Sqlite).await;
    let mut ada = ada_claims();
    ada["hd"] = json!("acme.example");
    let (idp, peer) = provider(
        &app,
        "google",
        &[(ADA, ada)],
        json!({"hosted_domain": "acme.example"}),
    )
    .await;
    Browser::new(&app).sign_in_ok(&app, &idp, ADA).await;
    peer.tamper_next_id_token(json!({"claims": {"hd": "gmail.com"}}))
        .await;
    assert_eq!(
        Browser::new(&app).sign_in(&app, &idp, ADA).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(last_refusal(&app).await, "wrong_hosted_domain");
    peer.tamper_next_id_token(json!({"claims": {"email_verified": null}}))
        .await;
    assert_eq!(
        Browser::new(&app).sign_in(&app, &idp, ADA).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(last_refusal(&app).await, "email_not_verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_providers_are_managed_without_revealing_secrets_or_escalating() {
    let app = spawn_app(Db::Sqlite).await;
    // Missing and invalid fields are named.
    let (status, body) = app
        .post(
            "/identity-providers",
            &app.admin_key,
            json!({"name": "x", "kind": "oidc", "issuer": "ftp://idp", "email_domains": ["Not A Domain"]}),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in ["client_id", "client_secret"] {
        assert!(fields.contains(&field), "{body}");
    }
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    for path in [
        "/identity-providers".to_owned(),
        format!("/identity-providers/{idp}"),
    ] {
        let (status, body) = app.get(&path, &app.admin_key).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.to_string().contains(CLIENT_SECRET), "{body}");
    }
    // A holder of only `identity_provider.manage` cannot map a provider group onto a group
    // whose bindings grant more than it holds.
    app.post("/groups", &app.admin_key, json!({"name": "admins"}))
        .await;
    bind_group(&app, "admins", "Admin").await;
    let (status, role) = app
        .post(
            "/roles",
            &app.admin_key,
            json!({"name": "IdP admin", "description": "", "actions": ["identity_provider.manage", "identity_provider.read"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{role}");
    let idp_admin = app.key_with_role(Some("IdP admin")).await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/identity-providers/{idp}"),
            &idp_admin,
            Some(json!({"group_mappings": {"idp-staff": "admins"}})),
        )
        .await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    // Nor hand the provider a group a policy names: a forbid on its members lets go of whoever
    // the provider leaves out, a permit on claims reaches members by the claims they already
    // carry (neither shows on a new member without claims). A group nothing names is fine.
    let path = format!("/identity-providers/{idp}");
    let claims_permit = r#"permit(principal in Flowgate::Group::"{id}", action == Flowgate::Action::"user.create", resource) when { principal.hasTag("clearance") && principal.getTag("clearance") == "high" };"#;
    for (group, text) in [
        (
            "contractors",
            r#"forbid(principal in Flowgate::Group::"{id}", action, resource);"#,
        ),
        ("finance-approvers", claims_permit),
        (
            "temps",
            r#"forbid(principal, action, resource) when { principal in Flowgate::Group::"{id}" };"#,
        ),
        ("plain", ""),
    ] {
        let (status, created) = app
            .post("/groups", &app.admin_key, json!({"name": group}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        if !text.is_empty() {
            let text = text.replace("{id}", created["id"].as_str().unwrap());
            let (status, body) = app
                .post(
                    "/policies",
                    &app.admin_key,
                    json!({"name": group, "text": text}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let mapping = json!({"group_mappings": {"idp-x": group}});
        let (status, body) = app
            .call(Method::PATCH, &path, &idp_admin, Some(mapping))
            .await;
        if text.is_empty() {
            assert_eq!(status, StatusCode::OK, "{body}");
        } else {
            assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        }
    }
    // Nor re-point the provider at an issuer of its own (it could then sign in as anyone who
    // signed in through this one, Admins included), nor trust more of its second factors.
    for change in [
        json!({"issuer": "https://idp.attacker.example"}),
        json!({"trusted_mfa": ["pwd"]}),
    ] {
        let (status, body) = app
            .call(Method::PATCH, &path, &idp_admin, Some(change.clone()))
            .await;
        assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
        let (_, stored) = app.get(&path, &app.admin_key).await;
        assert_ne!(stored["issuer"], "https://idp.attacker.example", "{change}");
        assert_eq!(stored["trusted_mfa"], json!([]), "{change}");
    }
    // What does not change whom it trusts is theirs to change; re-pointing is the Admin's.
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            &idp_admin,
            Some(json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            &app.admin_key,
            Some(json!({"issuer": "https://idp.elsewhere.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["issuer"], "https://idp.elsewhere.example");
    // Without the permission at all, nothing is shown.
    let nobody = app.key_with_role(None).await;
    let (status, _) = app.get("/identity-providers", &nobody).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Deleting the provider ends sign-in through it.
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/identity-providers/{idp}"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let response = Browser::new(&app)
        .client
        .get(app.url(&format!("/t/{}/auth/oidc/{idp}/login", app.tenant)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// A refused change leaves the provider as it was, its client secret included: the new
/// secret, written to the key store before the row, is put back when the row's change fails
/// (here on a name another provider has), and sign-in goes on with the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_provider_change_keeps_its_client_secret() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let (status, other) = app
        .post(
            "/identity-providers",
            &app.admin_key,
            json!({"name": "Other", "kind": "oidc", "issuer": "https://idp.other.example",
                   "client_id": "other", "client_secret": "other-secret",
                   "email_domains": ["other.example"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/identity-providers/{idp}"),
            &app.admin_key,
            Some(json!({"name": "Other", "client_secret": "a-secret-never-saved"})),
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
    // A name taken at creation leaves no secret behind either (nothing refers to it).
    let (status, body) = app
        .post(
            "/identity-providers",
            &app.admin_key,
            json!({"name": "Other", "kind": "oidc", "issuer": "https://idp.third.example",
                   "client_id": "third", "client_secret": "third-secret",
                   "email_domains": ["third.example"]}),
        )
        .await;
    assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
    // A change whose commit fails (its audit event is refused) is not stored: its secret goes.
    crate::jose::break_audit(&app).await;
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/identity-providers/{idp}"),
            &app.admin_key,
            Some(json!({"client_secret": "a-secret-never-on-record"})),
        )
        .await;
    assert!(status.is_server_error(), "{status} {body}");
    crate::jose::heal_audit(&app).await;
    let (_, stored) = app
        .get(&format!("/identity-providers/{idp}"), &app.admin_key)
        .await;
    assert_eq!(stored["name"], "generic IdP");
    Browser::new(&app).sign_in_ok(&app, &idp, ADA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_page_sends_a_person_to_the_provider_of_their_domain() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, _peer) = provider(
        &app,
        "generic",
        &[(ADA, ada_claims())],
        json!({"name": "<b>Acme</b> SSO"}),
    )
    .await;
    let browser = Browser::new(&app);
    let page = app.url(&format!("/t/{}/auth/login", app.tenant));
    let response = browser.client.get(&page).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(
        html.contains("&lt;b&gt;Acme&lt;/b&gt; SSO") && !html.contains("<b>Acme"),
        "{html}"
    );
    let to = browser
        .redirect(&format!("{page}?email=ada%40Acme.example"))
        .await;
    assert_eq!(to, format!("/t/{}/auth/oidc/{idp}/login", app.tenant));
    let response = browser
        .client
        .get(format!("{page}?email=eve%40elsewhere.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("No identity provider")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timeouts_are_the_tenants_and_mfa_is_not_promised_where_passkeys_cannot_work() {
    // The test server's public URL is an IP address, which WebAuthn does not accept.
    let app = spawn_app(Db::Sqlite).await;
    let (status, body) = app
        .call(
            Method::PATCH,
            "/settings",
            &app.admin_key,
            Some(json!({"mfa": "required"})),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["errors"][0]["field"], "mfa");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("passkeys are unavailable")
    );
    let (status, body) = app
        .call(
            Method::PATCH,
            "/settings",
            &app.admin_key,
            Some(json!({"session_idle_minutes": 0})),
        )
        .await;
    assert_problem(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, settings) = app
        .call(
            Method::PATCH,
            "/settings",
            &app.admin_key,
            Some(json!({"mfa": "optional", "session_idle_minutes": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(
        settings,
        json!({"mfa": "optional", "step_up_minutes": 5, "human_only_actions": [],
               "session_idle_minutes": 5, "session_absolute_minutes": 720,
               "payload_encryption_required": false, "payload_encryption_operations": [], "passkey_aaguids": []})
    );

    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let browser = Browser::new(&app);
    browser.sign_in_ok(&app, &idp, ADA).await;
    assert_eq!(
        browser.api(&app, Method::GET, "/me").await.0,
        StatusCode::OK
    );
    // Six minutes without a request: the session is over.
    let idle = (chrono::Utc::now() - chrono::Duration::minutes(6)).to_rfc3339();
    app.tenant_sql(&format!("UPDATE sessions SET last_seen_at = '{idle}'"))
        .await;
    assert_eq!(
        browser.api(&app, Method::GET, "/me").await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// A shorter absolute timeout reaches the sessions already open, at their next request: one
/// set during an incident ends every session older than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortened_absolute_timeout_ends_older_open_sessions() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let browser = Browser::new(&app);
    browser.sign_in_ok(&app, &idp, ADA).await;
    let opened = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    app.tenant_sql(&format!("UPDATE sessions SET created_at = '{opened}'"))
        .await;
    let (status, mine) = browser.api(&app, Method::GET, "/me/sessions").await;
    assert_eq!(status, StatusCode::OK, "within the 12-hour default: {mine}");
    let (status, body) = app
        .call(
            Method::PATCH,
            "/settings",
            &app.admin_key,
            Some(json!({"session_absolute_minutes": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        browser.api(&app, Method::GET, "/me").await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// The session cookie's value a sign-in set.
fn session_token(landing: &crate::oidc_peer::Landing) -> String {
    landing
        .set_cookies
        .iter()
        .find_map(|c| c.strip_prefix("__Host-flowgate-session-"))
        .and_then(|c| c.split(';').next()?.split_once('=').map(|(_, value)| value))
        .expect("a session cookie")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_end_their_own_sessions_and_admins_anyones() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let laptop = Browser::new(&app);
    let phone = Browser::new(&app);
    for browser in [&laptop, &phone] {
        browser.sign_in_ok(&app, &idp, ADA).await;
    }
    let (status, mine) = laptop.api(&app, Method::GET, "/me/sessions").await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let sessions = mine["items"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert!(!mine.to_string().contains("token"), "{mine}");
    let phone_session = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ada = sessions[0]["user_id"].as_str().unwrap().to_owned();

    // Ending a session is a change: it needs this server's Origin.
    let end = |browser: &Browser, path: String, origin: Option<String>| {
        let mut request = browser.client.delete(app.tenant_url(&path));
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        request.send()
    };
    let forged = end(&laptop, format!("/me/sessions/{phone_session}"), None)
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let ended = end(
        &laptop,
        format!("/me/sessions/{phone_session}"),
        Some(app.base.clone()),
    )
    .await
    .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        phone.api(&app, Method::GET, "/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    let again = end(
        &laptop,
        format!("/me/sessions/{phone_session}"),
        Some(app.base.clone()),
    )
    .await
    .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::NOT_FOUND,
        "an ended session is gone"
    );
    assert_eq!(laptop.api(&app, Method::GET, "/me").await.0, StatusCode::OK);
    assert!(!events(&app, "auth.session_revoke").await.is_empty());

    // An admin lists and ends anyone's sessions.
    let (status, listed) = app
        .get(&format!("/users/{ada}/sessions"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/sessions/{phone_session}"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already ended");
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/users/{ada}/sessions"),
            &app.admin_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        laptop.api(&app, Method::GET, "/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (_, listed) = app
        .get(&format!("/users/{ada}/sessions"), &app.admin_key)
        .await;
    assert_eq!(listed["items"], json!([]));
    let (status, _) = app
        .get(
            &format!("/users/{}/sessions", uuid::Uuid::new_v4()),
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A service account has no sessions of its own.
    let (status, none) = app.get("/me/sessions", &app.admin_key).await;
    assert_eq!((status, none["items"].clone()), (StatusCode::OK, json!([])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_exchanged_for_a_token_that_ends_with_it() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, _peer) = provider(&app, "generic", &[(ADA, ada_claims())], json!({})).await;
    let browser = Browser::new(&app);
    let landing = browser.sign_in(&app, &idp, ADA).await;
    let session = session_token(&landing);
    let endpoint = app.url(&format!("/t/{}/auth/token", app.tenant));
    let exchange =
        |fields: Vec<(&'static str, String)>| app.client.post(&endpoint).form(&fields).send();
    let grant = (
        "grant_type",
        "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
    );
    let session_type = (
        "subject_token_type",
        "urn:flowgate:params:oauth:token-type:session".to_owned(),
    );

    let response = exchange(vec![
        grant.clone(),
        session_type.clone(),
        ("subject_token", session.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let issued: Value = response.json().await.unwrap();
    assert_eq!(
        issued["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert!(issued["expires_in"].as_u64().unwrap() <= 600);
    let token = issued["access_token"].as_str().unwrap().to_owned();
    let (status, me) = app.get("/me", &token).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "ada@acme.example");
    assert_eq!(me["auth"]["method"], "access_token");
    let (status, _) = app.get("/users", &token).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the token holds what the person holds"
    );

    // The browser's own cookie may be the subject, with this server's Origin only.
    let with_cookie = |origin: Option<&str>| {
        let mut request = browser
            .client
            .post(&endpoint)
            .form(&[grant.clone(), session_type.clone()]);
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        request.send()
    };
    assert_eq!(
        with_cookie(Some(&app.base)).await.unwrap().status(),
        StatusCode::OK
    );
    for origin in [None, Some("https://evil.example")] {
        let refused = with_cookie(origin).await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{origin:?}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
    // A token for another audience is not this endpoint's to issue.
    let elsewhere = exchange(vec![
        grant.clone(),
        session_type.clone(),
        ("subject_token", session.clone()),
        ("audience", "https://elsewhere.example".into()),
    ])
    .await
    .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::BAD_REQUEST);
    let body: Value = elsewhere.json().await.unwrap();
    assert_eq!(body["error"], "invalid_target");
    // Wrong, forged and mistyped subjects.
    for fields in [
        vec![
            grant.clone(),
            session_type.clone(),
            ("subject_token", "x".repeat(43)),
        ],
        vec![
            grant.clone(),
            session_type.clone(),
            ("subject_token", token.clone()),
        ],
        vec![grant.clone(), ("subject_token", session.clone())],
        vec![
            grant.clone(),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token".into(),
            ),
            ("subject_token", token.clone()),
        ],
    ] {
        let response = exchange(fields).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    let refusal = events(&app, "auth.token")
        .await
        .into_iter()
        .rfind(|e| e["decision"] == "deny");
    assert!(refusal.is_some(), "refused exchanges are audited");
    let trail = app
        .audit_events()
        .await
        .iter()
        .map(Value::to_string)
        .collect::<String>();
    assert!(
        !trail.contains(&session) && !trail.contains(&token),
        "no token in the trail"
    );

    // Signing out ends the token with the session, before its exp.
    let logout = browser
        .client
        .post(app.url(&format!("/t/{}/auth/logout", app.tenant)))
        .header("Origin", &app.base)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    let (status, _) = app.get("/me", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = exchange(vec![grant, session_type, ("subject_token", session)])
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "an ended session buys nothing"
    );
}
