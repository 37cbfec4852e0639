//! Schema migrations (sea-orm-migration). Shipped migrations are immutable:
//! change the schema by adding a new file.

pub use sea_orm_migration::prelude::*;

mod m20261203_000001_create_tables;
mod m20261203_000002_kite_sessions;
mod m20261203_000003_worker_leases;
mod m20261204_000004_audit_chain;
mod m20261204_000006_row_level_security;

/// The PostgreSQL roles `serve` and `worker` act through (row-level security).
pub use m20261204_000006_row_level_security::{APP_ROLE, WORKER_ROLE};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261203_000001_create_tables::Migration),
            Box::new(m20261203_000002_kite_sessions::Migration),
            Box::new(m20261203_000003_worker_leases::Migration),
            Box::new(m20261204_000004_audit_chain::Migration),
            Box::new(m20261204_000006_row_level_security::Migration),
        ]
    }
}
