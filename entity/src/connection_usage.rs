//! `connection_usage`: calls to the exchange per connection, in hourly buckets.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "connection_usage")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub connection_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub bucket_start: DateTimeUtc,
    pub user_id: Uuid,
    pub calls: i64,
    pub errors: i64,
    /// `{"INVALID_CREDENTIALS": 2, ...}`
    #[sea_orm(column_type = "JsonBinary")]
    pub errors_by_code: Json,
    /// Latency histogram: `{"<upper bound ms>": count}`.
    #[sea_orm(column_type = "JsonBinary")]
    pub latency_histogram: Json,
    pub weight_used: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
