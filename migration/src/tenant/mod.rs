pub mod m20261129_000001_spine;
