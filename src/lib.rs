//! Flowgate: a multi-tenant workflow-automation backend whose product is its security model.
//!
//! [`app::AppState::open`] builds the services from [`config::Settings`]; [`http::Server`] serves
//! them; the `flowgate` binary's commands live in [`cli`].

pub mod app;
pub mod audit;
pub mod authz;
pub mod cli;
pub mod config;
pub mod content;
pub mod crypto;
pub mod directory;
pub mod files;
pub mod http;
pub mod identity;
pub mod keystore;
pub mod net;
pub mod openapi;
pub mod platform;
pub mod secrets;
pub mod shared_state;
pub mod signals;
pub mod signin;
pub mod telemetry;
pub mod tenancy;
