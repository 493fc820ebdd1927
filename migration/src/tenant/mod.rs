pub mod m20261129_000001_spine;
pub mod m20261129_000002_authz;
pub mod m20261203_000001_signin;
pub mod m20261203_000002_clients;
pub mod m20261203_000003_saml;
pub mod m20261203_000004_trusted_issuers;
pub mod m20261203_000005_secrets;
pub mod m20261203_000006_passkeys;
