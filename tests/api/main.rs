//! Black-box tests of Flowgate: each starts the real application on port 0 with its own data
//! directory, against SQLite or a fresh PostgreSQL database, and talks HTTPS to it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;
mod oidc_peer;
mod saml_peer;

mod account_status;
mod api_keys;
mod attacks;
mod audit;
mod authorization_matrix;
mod authz;
mod break_glass;
mod browser;
mod cli;
mod client_address;
mod clients;
mod database_tls;
mod errors;
mod federation;
mod health;
mod jose;
mod mfa;
mod openapi;
mod passkeys;
mod platform;
mod rate_limits;
mod saml;
mod secrets;
mod signals;
mod signin;
mod storage;
mod telemetry;
mod tenant_isolation;
mod tls;
mod tokens;
mod unit_of_work;
mod vault;
