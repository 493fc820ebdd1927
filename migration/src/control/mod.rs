pub mod m20261129_000001_control;
pub mod m20261201_000001_platform_audit;
