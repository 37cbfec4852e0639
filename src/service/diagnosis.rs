//! `diagnoseConnection`: when a key "stops working", run the checks a
//! support engineer would, in order, and say what each found: is the
//! exchange reachable, are the clocks in step, does a signed read work,
//! what may the key do, and which IPs it must allow.

use super::audit::{self, action};
use super::{RequestContext, Services};
use crate::domain::{ExchangeErrorCode, Permissions};
use crate::error::AppResult;
use async_graphql::{Enum, ID, SimpleObject};
use chrono::Utc;
use serde_json::json;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    Pass,
    Warn,
    Fail,
    Skipped,
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "DiagnosisStep")]
pub struct DiagnosisStepView {
    /// `reach`, `clock`, `signed_read`, `permissions`, `ip_whitelist`.
    pub name: &'static str,
    pub status: StepStatus,
    pub detail: String,
    pub hint: Option<String>,
    pub latency_ms: Option<i32>,
}

#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "Diagnosis")]
pub struct DiagnosisView {
    pub connection_id: ID,
    /// True when no step failed.
    pub ok: bool,
    pub steps: Vec<DiagnosisStepView>,
    pub egress_ips: Vec<String>,
}

/// Clock skew beyond which signed requests start to fail (Binance accepts 1 s ahead).
const SKEW_WARN_MS: i64 = 1_000;
const SKEW_FAIL_MS: i64 = 5_000;

fn step(name: &'static str, status: StepStatus, detail: impl Into<String>) -> DiagnosisStepView {
    DiagnosisStepView {
        name,
        status,
        detail: detail.into(),
        hint: None,
        latency_ms: None,
    }
}

impl Services {
    pub async fn diagnose_connection(&self, ctx: &RequestContext, id: &str) -> AppResult<DiagnosisView> {
        let (row, exchange, environment) = self.live_row(ctx, id).await?;
        self.limiter.check(ctx.principal.user_id)?;
        let client = self
            .exchanges
            .get(exchange)
            .map_err(|e| crate::error::AppError::bad_input("id", e.to_string()))?;
        let mut steps = Vec::new();
        let ips = self.egress_ips.as_ref().clone();

        // 1 and 2: reach the exchange's public clock, and compare it with ours.
        let started = Instant::now();
        let sent_at = Utc::now();
        let mut reachable = true;
        match client.server_time(environment).await {
            Ok(Some(their_time)) => {
                let elapsed = started.elapsed();
                let mut reach = step(
                    "reach",
                    StepStatus::Pass,
                    format!("{exchange} answered in {} ms", elapsed.as_millis()),
                );
                reach.latency_ms = Some(elapsed.as_millis().min(i32::MAX as u128) as i32);
                steps.push(reach);
                let ours = sent_at + chrono::Duration::from_std(elapsed / 2).unwrap_or_default();
                let skew_ms = (ours - their_time).num_milliseconds();
                let direction = if skew_ms >= 0 { "ahead of" } else { "behind" };
                let detail = format!("this service's clock is {} ms {direction} {exchange}'s", skew_ms.abs());
                let mut clock = step(
                    "clock",
                    match skew_ms.abs() {
                        s if s >= SKEW_FAIL_MS => StepStatus::Fail,
                        s if s >= SKEW_WARN_MS => StepStatus::Warn,
                        _ => StepStatus::Pass,
                    },
                    detail,
                );
                if clock.status != StepStatus::Pass {
                    clock.hint = Some(
                        "Requests are stamped with a corrected time, but a large skew points at the service's clock: \
                         tell the operator."
                            .into(),
                    );
                }
                steps.push(clock);
            }
            Ok(None) => {
                steps.push(step(
                    "reach",
                    StepStatus::Skipped,
                    format!("{exchange} has no public time endpoint"),
                ));
                steps.push(step("clock", StepStatus::Skipped, "no exchange clock to compare with"));
            }
            Err(error) => {
                reachable = !matches!(
                    error.code,
                    ExchangeErrorCode::NetworkError | ExchangeErrorCode::ExchangeUnavailable
                );
                let mut reach = step("reach", StepStatus::Fail, error.message.clone());
                reach.hint = error.hint.clone();
                steps.push(reach);
                steps.push(step(
                    "clock",
                    StepStatus::Skipped,
                    "the exchange's clock could not be read",
                ));
            }
        }

        // 3 and 4: a signed read with the stored key, and what the key may do.
        let mut permissions: Option<Permissions> = None;
        let mut signed_error = None;
        if !reachable {
            steps.push(step(
                "signed_read",
                StepStatus::Skipped,
                "the exchange is not reachable",
            ));
            steps.push(step(
                "permissions",
                StepStatus::Skipped,
                "the exchange is not reachable",
            ));
        } else {
            let credentials = self.open_credentials(&row)?;
            let started = Instant::now();
            let outcome = client.test(environment, &credentials).await;
            drop(credentials);
            match outcome {
                Ok(report) => {
                    let mut read = step(
                        "signed_read",
                        StepStatus::Pass,
                        "a signed request with this key succeeded",
                    );
                    read.latency_ms = Some(started.elapsed().as_millis().min(i32::MAX as u128) as i32);
                    steps.push(read);
                    let p = report.permissions;
                    let detail = format!(
                        "read: {}, trade: {}, withdraw: {}",
                        yes_no(p.can_read),
                        yes_no(p.can_trade),
                        yes_no(p.can_withdraw)
                    );
                    let mut perms = step(
                        "permissions",
                        if p.can_withdraw || !p.can_read {
                            StepStatus::Warn
                        } else {
                            StepStatus::Pass
                        },
                        detail,
                    );
                    let warnings = self.policy.warnings(&report);
                    if !warnings.is_empty() {
                        perms.status = StepStatus::Warn;
                        perms.hint = Some(warnings.join(" "));
                    }
                    steps.push(perms);
                    permissions = Some(p);
                }
                Err(error) => {
                    let mut read = step("signed_read", StepStatus::Fail, error.message.clone());
                    read.hint = error.hint.clone();
                    steps.push(read);
                    steps.push(step("permissions", StepStatus::Skipped, "the signed read failed"));
                    signed_error = Some(error);
                }
            }
        }

        // 5: which IPs the key must allow.
        let list = if ips.is_empty() {
            "the operator has not published the service's egress IPs (EGRESS_IPS)".to_string()
        } else {
            format!("the key must allow {}", ips.join(", "))
        };
        let auth_failed = signed_error.as_ref().is_some_and(|e| {
            matches!(
                e.code,
                ExchangeErrorCode::InvalidCredentials
                    | ExchangeErrorCode::IpNotAllowed
                    | ExchangeErrorCode::PermissionDenied
            )
        });
        let mut ip = match permissions.and_then(|p| p.ip_restricted) {
            Some(true) => step(
                "ip_whitelist",
                StepStatus::Pass,
                format!("the key is restricted to trusted IPs; {list}"),
            ),
            Some(false) => step(
                "ip_whitelist",
                StepStatus::Warn,
                format!("the key is not restricted to trusted IPs; {list}"),
            ),
            None if auth_failed => step(
                "ip_whitelist",
                StepStatus::Fail,
                format!("if the key has an IP allowlist, {list}"),
            ),
            None => step(
                "ip_whitelist",
                StepStatus::Pass,
                format!("{exchange} does not say whether the key is IP-restricted; {list}"),
            ),
        };
        if ip.status != StepStatus::Pass {
            ip.hint = Some(format!(
                "Edit the key at {exchange} and add every egress IP to its allowlist."
            ));
        }
        steps.push(ip);

        let ok = steps.iter().all(|s| s.status != StepStatus::Fail);
        let summary: Vec<_> = steps
            .iter()
            .map(|s| json!({ "step": s.name, "status": s.status }))
            .collect();
        // A single append: it commits alone.
        let txn = self.db.as_user(ctx.principal.user_id).await?;
        let entry = audit::record(
            &txn,
            ctx,
            Some(row.id),
            action::DIAGNOSED,
            json!({ "ok": ok, "steps": summary }),
        )
        .await?;
        txn.commit().await?;
        self.announce_audit(&[entry]);
        Ok(DiagnosisView {
            connection_id: ID(row.id.to_string()),
            ok,
            steps,
            egress_ips: ips,
        })
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}
