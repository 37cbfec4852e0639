//! Usage analytics: every exchange test of a stored connection (manual or
//! the worker's) is counted in the connection's hourly `connection_usage`
//! bucket, in the transaction that records the check; `connectionUsage`
//! reads the buckets back with latency percentiles.

use super::connections::owned_row_by_id;
use super::input::parse_id;
use super::{RequestContext, Services};
use crate::domain::ExchangeErrorCode;
use crate::error::{AppError, AppResult};
use crate::exchange::{ExchangeError, TestReport};
use async_graphql::SimpleObject;
use chrono::{DateTime, DurationRound, Utc};
use entity::connection_usage as usage;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// Upper bounds (ms) of the latency histogram's buckets; slower calls go to `inf`.
pub const LATENCY_BOUNDS_MS: [u32; 10] = [25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000];
const OVERFLOW: &str = "inf";

/// Default and longest range of `connectionUsage`.
pub const DEFAULT_RANGE: chrono::Duration = chrono::Duration::hours(24);
pub const MAX_RANGE: chrono::Duration = chrono::Duration::days(31);

fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(chrono::Duration::hours(1)).unwrap_or(at)
}

/// The histogram key a latency falls in.
fn latency_key(ms: u64) -> String {
    LATENCY_BOUNDS_MS
        .iter()
        .find(|bound| ms <= u64::from(**bound))
        .map_or_else(|| OVERFLOW.to_string(), u32::to_string)
}

fn bump(map: &mut Value, key: &str) {
    if !map.is_object() {
        *map = Value::Object(Map::new());
    }
    if let Value::Object(map) = map {
        let n = map.get(key).and_then(Value::as_i64).unwrap_or(0);
        map.insert(key.to_string(), json!(n.saturating_add(1)));
    }
}

/// Counts one test call in its hour's bucket. Call inside the transaction
/// that records the check. The counters are one atomic upsert (which also
/// locks the row on PostgreSQL until commit); the JSON maps and the peak
/// weight are then read, changed and written under that lock.
pub async fn record(
    txn: &impl ConnectionTrait,
    connection_id: Uuid,
    user_id: Uuid,
    at: DateTime<Utc>,
    outcome: Result<&TestReport, &ExchangeError>,
) -> AppResult<()> {
    let bucket_start = hour_of(at);
    let failed = i64::from(outcome.is_err());
    usage::Entity::insert(usage::ActiveModel {
        connection_id: Set(connection_id),
        bucket_start: Set(bucket_start),
        user_id: Set(user_id),
        calls: Set(1),
        errors: Set(failed),
        errors_by_code: Set(json!({})),
        latency_histogram: Set(json!({})),
        weight_used: Set(0),
    })
    .on_conflict(
        OnConflict::columns([usage::Column::ConnectionId, usage::Column::BucketStart])
            .value(
                usage::Column::Calls,
                sea_orm::ExprTrait::add(Expr::col((usage::Entity, usage::Column::Calls)), 1),
            )
            .value(
                usage::Column::Errors,
                sea_orm::ExprTrait::add(Expr::col((usage::Entity, usage::Column::Errors)), failed),
            )
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;

    let row = usage::Entity::find_by_id((connection_id, bucket_start))
        .one(txn)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("usage bucket vanished inside its transaction")))?;
    let mut errors_by_code = row.errors_by_code.clone();
    let mut histogram = row.latency_histogram.clone();
    let mut weight = row.weight_used;
    match outcome {
        Ok(report) => {
            let ms = u64::try_from(report.latency.as_millis()).unwrap_or(u64::MAX);
            bump(&mut histogram, &latency_key(ms));
            if let Some(usage) = report.usage {
                weight = weight.max(i64::from(usage.weight_used));
            }
        }
        Err(error) => bump(&mut errors_by_code, error.code.as_str()),
    }
    let mut active = row.into_active_model();
    active.errors_by_code = Set(errors_by_code);
    active.latency_histogram = Set(histogram);
    active.weight_used = Set(weight);
    active.update(txn).await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
#[graphql(name = "ErrorCount")]
pub struct ErrorCountView {
    pub code: ExchangeErrorCode,
    pub count: i32,
}

/// One hour of a connection's exchange calls.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
#[graphql(name = "UsageBucket")]
pub struct UsageBucketView {
    /// The start of the hour (UTC).
    pub bucket_start: DateTime<Utc>,
    pub calls: i32,
    pub errors: i32,
    /// Failed calls by error code, most frequent first.
    pub errors_by_code: Vec<ErrorCountView>,
    /// Upper bound of the histogram bucket holding the median latency of successful calls.
    pub p50_latency_ms: Option<i32>,
    /// Upper bound of the histogram bucket holding the 95th percentile.
    pub p95_latency_ms: Option<i32>,
    /// Peak rate-limit weight the exchange reported as used within a minute
    /// during this hour (Binance `X-MBX-USED-WEIGHT-1M`); 0 when it does not report it.
    pub weight_used: i32,
}

fn clamp(n: i64) -> i32 {
    i32::try_from(n.max(0)).unwrap_or(i32::MAX)
}

/// The latency at percentile `p` (0..=1): the upper bound of the histogram
/// bucket holding that rank; `None` without samples.
pub fn percentile(histogram: &Value, p: f64) -> Option<i32> {
    let count = |key: &str| histogram.get(key).and_then(Value::as_u64).unwrap_or(0);
    let total: u64 = LATENCY_BOUNDS_MS.iter().map(|b| count(&b.to_string())).sum::<u64>() + count(OVERFLOW);
    if total == 0 {
        return None;
    }
    let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for bound in LATENCY_BOUNDS_MS {
        seen += count(&bound.to_string());
        if seen >= rank {
            return i32::try_from(bound).ok();
        }
    }
    // Beyond the last bound: report the last bound (the least it took).
    LATENCY_BOUNDS_MS.last().and_then(|b| i32::try_from(*b).ok())
}

impl From<usage::Model> for UsageBucketView {
    fn from(row: usage::Model) -> Self {
        let mut errors_by_code: Vec<ErrorCountView> = row
            .errors_by_code
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(code, n)| {
                Some(ErrorCountView {
                    code: ExchangeErrorCode::parse(code)?,
                    count: clamp(n.as_i64()?),
                })
            })
            .collect();
        errors_by_code.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.as_str().cmp(b.code.as_str())));
        Self {
            bucket_start: row.bucket_start,
            calls: clamp(row.calls),
            errors: clamp(row.errors),
            errors_by_code,
            p50_latency_ms: percentile(&row.latency_histogram, 0.50),
            p95_latency_ms: percentile(&row.latency_histogram, 0.95),
            weight_used: clamp(row.weight_used),
        }
    }
}

impl Services {
    /// Hourly buckets of one of the caller's connections between `from`
    /// (default: 24 hours before `to`) and `to` (default: now), oldest
    /// first; hours without calls are omitted.
    pub async fn connection_usage(
        &self,
        ctx: &RequestContext,
        id: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> AppResult<Vec<UsageBucketView>> {
        let to = to.unwrap_or_else(entity::now);
        let from = from.unwrap_or(to - DEFAULT_RANGE);
        if from > to {
            return Err(AppError::bad_input("from", "must not be after `to`"));
        }
        if to - from > MAX_RANGE {
            return Err(AppError::bad_input(
                "to",
                format!("the range may span at most {} days", MAX_RANGE.num_days()),
            ));
        }
        let id = parse_id("id", id)?;
        let txn = self.db.as_user(ctx.principal.user_id).await?;
        let row = owned_row_by_id(&txn, ctx, id).await?;
        let rows = usage::Entity::find()
            .filter(usage::Column::ConnectionId.eq(row.id))
            .filter(usage::Column::UserId.eq(ctx.principal.user_id))
            .filter(usage::Column::BucketStart.gte(hour_of(from)))
            .filter(usage::Column::BucketStart.lte(to))
            .order_by_asc(usage::Column::BucketStart)
            .all(&txn)
            .await?;
        super::tenancy::end_read(txn);
        Ok(rows.into_iter().map(UsageBucketView::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_keys_use_fixed_bounds() {
        assert_eq!(latency_key(0), "25");
        assert_eq!(latency_key(25), "25");
        assert_eq!(latency_key(26), "50");
        assert_eq!(latency_key(30_000), "30000");
        assert_eq!(latency_key(30_001), "inf");
    }

    #[test]
    fn percentiles_from_the_histogram() {
        assert_eq!(percentile(&json!({}), 0.5), None);
        // 90 fast calls, 10 slow ones.
        let h = json!({"25": 90, "1000": 10});
        assert_eq!(percentile(&h, 0.5), Some(25));
        assert_eq!(percentile(&h, 0.90), Some(25));
        assert_eq!(percentile(&h, 0.95), Some(1000));
        assert_eq!(percentile(&json!({"inf": 3}), 0.5), Some(30000));
        // Unknown keys and junk values are ignored.
        assert_eq!(percentile(&json!({"7": 5, "50": "x", "100": 1}), 0.5), Some(100));
    }

    #[test]
    fn hours_truncate() {
        let at: DateTime<Utc> = "2026-12-03T10:59:59.999Z".parse().unwrap();
        assert_eq!(hour_of(at), "2026-12-03T10:00:00Z".parse::<DateTime<Utc>>().unwrap());
    }

    #[test]
    fn errors_by_code_sorted_and_unknown_codes_dropped() {
        let view = UsageBucketView::from(usage::Model {
            connection_id: Uuid::nil(),
            bucket_start: "2026-12-03T10:00:00Z".parse().unwrap(),
            user_id: Uuid::nil(),
            calls: 7,
            errors: 6,
            errors_by_code: json!({"NETWORK_ERROR": 1, "RATE_LIMITED": 4, "SOMETHING_NEW": 1}),
            latency_histogram: json!({"50": 1}),
            weight_used: 21,
        });
        assert_eq!(
            view.errors_by_code,
            vec![
                ErrorCountView {
                    code: ExchangeErrorCode::RateLimited,
                    count: 4
                },
                ErrorCountView {
                    code: ExchangeErrorCode::NetworkError,
                    count: 1
                },
            ]
        );
        assert_eq!((view.p50_latency_ms, view.p95_latency_ms), (Some(50), Some(50)));
    }
}
