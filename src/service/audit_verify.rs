//! Checks audit chains end to end: every entry present (no gap in `seq`),
//! unaltered (its hash recomputed), linked to the one before (`prev_hash`),
//! and the newest one where the user's chain head says it is (so deleting
//! the newest entries shows too). Reads in pages of [`PAGE`] entries, inside
//! one snapshot, so a long chain is never loaded at once and appends made
//! meanwhile do not look like tampering.

use super::tenancy::{TenantDb, TenantTxn, end_read};
use super::{RequestContext, Services};
use crate::error::AppResult;
use async_graphql::SimpleObject;
use entity::audit_chain::GENESIS;
use entity::{connection_audit_heads as heads, connection_audit_log as audit, users};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

/// Entries read per round trip.
pub const PAGE: u64 = 500;

/// The result of checking one user's chain.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
#[graphql(name = "AuditVerification")]
pub struct AuditVerificationView {
    /// Every entry is present, unaltered and linked to the one before, and
    /// the newest is the one the chain's head records.
    pub intact: bool,
    /// Entries in the chain.
    pub entries: i64,
    /// The first sequence number that is missing, altered or unlinked (null when intact).
    pub first_broken_seq: Option<i64>,
    /// What is wrong at `firstBrokenSeq` (null when intact).
    pub reason: Option<String>,
    /// The newest entry's hash. Kept elsewhere, it shows later whether the
    /// history up to here was rewritten.
    pub head_hash: Option<String>,
}

/// The first thing found wrong in a chain.
struct Break {
    seq: i64,
    reason: String,
}

/// Checks `user_id`'s chain. Run it inside one transaction (a snapshot on
/// PostgreSQL: [`Services::verify_audit_log`]), so that the head and the
/// entries are read as of one moment.
pub async fn verify_chain(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<AuditVerificationView> {
    // The head first: entries appended after it are not this snapshot's concern.
    let head = heads::Entity::find_by_id(user_id).one(db).await?;
    let (mut entries, mut expected, mut prev_hash) = (0_i64, 1_i64, GENESIS.to_string());
    let mut broken: Option<Break> = None;
    let mut after = i64::MIN;
    loop {
        let rows = audit::Entity::find()
            .filter(audit::Column::UserId.eq(user_id))
            .filter(audit::Column::Seq.gt(after))
            .order_by_asc(audit::Column::Seq)
            .limit(PAGE)
            .all(db)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in &rows {
            entries += 1;
            if broken.is_none() {
                broken = check_entry(row, expected, &prev_hash);
            }
            expected = row.seq.saturating_add(1);
            prev_hash.clone_from(&row.hash);
        }
    }
    let last_seq = expected - 1;
    if broken.is_none() {
        broken = check_head(head.as_ref(), last_seq, &prev_hash);
    }
    Ok(match broken {
        None => AuditVerificationView {
            intact: true,
            entries,
            first_broken_seq: None,
            reason: None,
            head_hash: (entries > 0).then_some(prev_hash),
        },
        Some(Break { seq, reason }) => AuditVerificationView {
            intact: false,
            entries,
            first_broken_seq: Some(seq),
            reason: Some(reason),
            head_hash: (entries > 0).then_some(prev_hash),
        },
    })
}

/// One entry against what the chain so far says it must be.
fn check_entry(row: &audit::Model, expected: i64, prev_hash: &str) -> Option<Break> {
    if row.seq > expected {
        let reason = if row.seq == expected + 1 {
            format!("gap in sequence: entry {expected} is missing")
        } else {
            format!("gap in sequence: entries {expected} to {} are missing", row.seq - 1)
        };
        return Some(Break { seq: expected, reason });
    }
    if row.seq < expected {
        return Some(Break {
            seq: expected,
            reason: format!("gap in sequence: entry {expected} has sequence number {}", row.seq),
        });
    }
    if row.prev_hash != prev_hash {
        return Some(Break {
            seq: row.seq,
            reason: format!(
                "broken link: entry {} does not point at the hash of entry {}",
                row.seq,
                row.seq - 1
            ),
        });
    }
    if row.chain_fields().hash() != row.hash {
        return Some(Break {
            seq: row.seq,
            reason: format!("hash mismatch: entry {} was altered after it was written", row.seq),
        });
    }
    None
}

/// The newest entry against the chain's head (no head: no entries expected).
fn check_head(head: Option<&heads::Model>, last_seq: i64, last_hash: &str) -> Option<Break> {
    let (head_seq, head_hash) = head.map_or((0, GENESIS), |h| (h.seq, h.hash.as_str()));
    if head_seq > last_seq {
        let reason = if head_seq == last_seq + 1 {
            format!("missing newest entry: entry {head_seq} is gone (the chain's head records it)")
        } else {
            format!(
                "missing newest entries: entries {} to {head_seq} are gone (the chain's head records them)",
                last_seq + 1
            )
        };
        return Some(Break {
            seq: last_seq + 1,
            reason,
        });
    }
    if head_seq < last_seq {
        return Some(Break {
            seq: head_seq + 1,
            reason: format!(
                "head mismatch: entries after {head_seq} are not recorded in the chain's head (written behind the service's back)"
            ),
        });
    }
    if last_seq > 0 && head_hash != last_hash {
        return Some(Break {
            seq: last_seq,
            reason: format!("head mismatch: entry {last_seq} is not the one the chain's head records"),
        });
    }
    None
}

/// Checks one user's chain in its own read-only snapshot, acting as that
/// user (`verifyAuditLog`) or as the system (`audit verify`, every chain).
async fn verify_in(txn: TenantTxn, user_id: Uuid) -> AppResult<AuditVerificationView> {
    let report = verify_chain(&txn, user_id).await;
    end_read(txn);
    report
}

/// Checks `user_id`'s chain acting as the system (the CLI, tests).
pub async fn verify_user(db: &TenantDb, user_id: Uuid) -> AppResult<AuditVerificationView> {
    verify_in(db.as_system_snapshot().await?, user_id).await
}

impl Services {
    /// `verifyAuditLog`: the caller's own chain.
    pub async fn verify_audit_log(&self, ctx: &RequestContext) -> AppResult<AuditVerificationView> {
        let user_id = ctx.principal.user_id;
        verify_in(self.db.as_user_snapshot(user_id).await?, user_id).await
    }
}

/// Totals of checking every user's chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifySummary {
    pub chains: u64,
    pub entries: i64,
    pub broken: u64,
}

/// Checks every user's chain (`exchange-connections audit verify`), users
/// read in pages; `on_broken` hears of each broken chain as it is found.
pub async fn verify_all(
    db: &TenantDb,
    mut on_broken: impl FnMut(Uuid, &AuditVerificationView),
) -> AppResult<VerifySummary> {
    let mut summary = VerifySummary::default();
    let mut after: Option<Uuid> = None;
    loop {
        let mut query = users::Entity::find()
            .select_only()
            .column(users::Column::Id)
            .order_by_asc(users::Column::Id)
            .limit(PAGE);
        if let Some(after) = after {
            query = query.filter(users::Column::Id.gt(after));
        }
        let txn = db.as_system().await?;
        let ids: Result<Vec<Uuid>, _> = query.into_tuple().all(&txn).await;
        end_read(txn);
        let ids = ids?;
        let Some(last) = ids.last() else { break };
        after = Some(*last);
        for user_id in ids {
            let report = verify_user(db, user_id).await?;
            summary.chains += 1;
            summary.entries += report.entries;
            if !report.intact {
                summary.broken += 1;
                on_broken(user_id, &report);
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64, prev_hash: &str) -> audit::Model {
        let mut row = audit::Model {
            id: Uuid::now_v7(),
            user_id: Uuid::nil(),
            connection_id: None,
            action: "connection.created".into(),
            actor: "user:x".into(),
            ip: None,
            user_agent: None,
            request_id: None,
            details: Some(serde_json::json!({"label": "Main"})),
            created_at: entity::now(),
            seq,
            prev_hash: prev_hash.into(),
            hash: String::new(),
        };
        row.hash = row.chain_fields().hash();
        row
    }

    fn chain(n: i64) -> Vec<audit::Model> {
        let mut rows: Vec<audit::Model> = Vec::new();
        for seq in 1..=n {
            let prev = rows.last().map_or(GENESIS.to_string(), |r| r.hash.clone());
            rows.push(entry(seq, &prev));
        }
        rows
    }

    /// The first break of `rows` against a head at (`head_seq`, `head_hash`).
    fn first_break(rows: &[audit::Model], head: Option<(i64, &str)>) -> Option<(i64, String)> {
        let (mut expected, mut prev) = (1, GENESIS.to_string());
        for row in rows {
            if let Some(b) = check_entry(row, expected, &prev) {
                return Some((b.seq, b.reason));
            }
            expected = row.seq + 1;
            prev.clone_from(&row.hash);
        }
        let head = head.map(|(seq, hash)| heads::Model {
            user_id: Uuid::nil(),
            seq,
            hash: hash.into(),
            updated_at: entity::now(),
        });
        check_head(head.as_ref(), expected - 1, &prev).map(|b| (b.seq, b.reason))
    }

    #[test]
    fn an_untouched_chain_is_intact() {
        let rows = chain(4);
        assert_eq!(first_break(&rows, Some((4, &rows[3].hash))), None);
        assert_eq!(first_break(&[], None), None);
        assert_eq!(first_break(&[], Some((0, GENESIS))), None);
    }

    #[test]
    fn each_kind_of_tampering_is_named_at_its_place() {
        let rows = chain(5);
        let head = Some((5, rows[4].hash.as_str()));

        let mut edited = rows.clone();
        edited[2].details = Some(serde_json::json!({"label": "Other"}));
        let (seq, reason) = first_break(&edited, head).unwrap();
        assert_eq!(seq, 3);
        assert!(reason.starts_with("hash mismatch"), "{reason}");

        let mut rehashed = edited.clone();
        rehashed[2].hash = rehashed[2].chain_fields().hash();
        let (seq, reason) = first_break(&rehashed, head).unwrap();
        assert_eq!(seq, 4);
        assert!(reason.starts_with("broken link"), "{reason}");

        let mut gap = rows.clone();
        gap.remove(1);
        assert_eq!(first_break(&gap, head).unwrap().0, 2);
        gap.remove(0);
        let (seq, reason) = first_break(&gap, head).unwrap();
        assert_eq!(seq, 1);
        assert!(reason.contains("entries 1 to 2 are missing"), "{reason}");

        let (seq, reason) = first_break(&rows[..3], head).unwrap();
        assert_eq!(seq, 4);
        assert!(reason.contains("entries 4 to 5 are gone"), "{reason}");
        let (seq, _) = first_break(&[], head).unwrap();
        assert_eq!(seq, 1);

        let (seq, reason) = first_break(&rows, Some((3, rows[2].hash.as_str()))).unwrap();
        assert_eq!(seq, 4);
        assert!(reason.starts_with("head mismatch"), "{reason}");
        assert_eq!(first_break(&rows, None).unwrap().0, 1);
        let (seq, reason) = first_break(&rows, Some((5, rows[3].hash.as_str()))).unwrap();
        assert_eq!(seq, 5);
        assert!(reason.starts_with("head mismatch"), "{reason}");
    }
}
