//! Tables inside every tenant's schema (PostgreSQL) or file (SQLite).

pub mod api_key;
pub mod audit_checkpoint;
pub mod audit_event;
pub mod audit_head;
pub mod data_key;
pub mod folder;
pub mod group;
pub mod group_member;
pub mod identity_provider;
pub mod login_state;
pub mod oauth_client;
pub mod policy;
pub mod policy_version;
pub mod process;
pub mod role;
pub mod role_binding;
pub mod saml_assertion;
pub mod secret;
pub mod secret_version;
pub mod service_account;
pub mod session;
pub mod tenant_setting;
pub mod trusted_issuer;
pub mod user;
pub mod user_identity;
