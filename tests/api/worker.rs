//! The health monitor: due connections are checked (status, health, next
//! due time, history, usage, audit), the status machine, leases (disjoint
//! claims, lapsed leases reclaimed, a killed worker process's connection
//! checked by another), retention, and the `connectionUsage` and
//! `healthSummary` queries with their bad inputs and tenant isolation.

use crate::connections::{binance_key, connect, create_input, create_mutation};
use crate::helpers::{Backend, ENCRYPTION_KEY, TempDir, TestApp};
use crate::mock::binance::{MockFailure, MockPermissions};
use crate::on_both_backends;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use entity::{connection_health_checks as checks, connection_usage as usage, exchange_keys as keys};
use exchange_connections::config::Settings;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The in-serve worker on, polling quickly.
fn with_worker(interval: &'static str) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.run_worker = Some(true);
        s.worker_poll_interval = "50ms".into();
        s.health_check_interval = interval.into();
    }
}

/// Polls `probe` until it yields `Some`, or fails the test after `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn uuid(id: &Value) -> Uuid {
    Uuid::parse_str(id.as_str().expect("id is a string")).expect("id is a UUID")
}

async fn key_row(app: &TestApp, id: Uuid) -> keys::Model {
    keys::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .expect("read exchange_keys")
        .expect("row exists")
}

/// Makes a connection due now, behind the service's back.
async fn make_due(app: &TestApp, id: Uuid) {
    keys::Entity::update_many()
        .col_expr(
            keys::Column::NextCheckAt,
            Expr::value(entity::now() - ChronoDuration::seconds(1)),
        )
        .filter(keys::Column::Id.eq(id))
        .exec(&app.db)
        .await
        .expect("make due");
}

async fn history(app: &TestApp, id: Uuid, source: Option<&str>) -> Vec<checks::Model> {
    let mut query = checks::Entity::find().filter(checks::Column::ConnectionId.eq(id));
    if let Some(source) = source {
        query = query.filter(checks::Column::Source.eq(source));
    }
    query
        .order_by_desc(checks::Column::CheckedAt)
        .all(&app.db)
        .await
        .expect("read health checks")
}

const USAGE_QUERY: &str =
    "query($id: ID!, $from: DateTime, $to: DateTime) { connectionUsage(id: $id, from: $from, to: $to) {
    bucketStart calls errors errorsByCode { code count } p50LatencyMs p95LatencyMs weightUsed } }";

async fn usage_totals(app: &TestApp, token: &str, id: &str) -> (i64, i64, Vec<Value>) {
    let data = app.ok(token, USAGE_QUERY, json!({ "id": id })).await;
    let buckets = data["connectionUsage"].as_array().unwrap().clone();
    let sum = |field: &str| buckets.iter().map(|b| b[field].as_i64().unwrap()).sum();
    (sum("calls"), sum("errors"), buckets)
}

async fn audit_nodes(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let data = app
        .ok(
            token,
            "query($c: ID) { auditLog(connectionId: $c, first: 200) { nodes { action actor details } } }",
            json!({ "c": id }),
        )
        .await;
    data["auditLog"]["nodes"].as_array().unwrap().clone()
}

async fn due_connection_is_checked_by_the_worker(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_worker("1h")).await;
    let token = app.token_for(Uuid::new_v4());
    let created = connect(&app, &token, "Main", "wk1").await;
    let id = uuid(&created["id"]);

    // Created healthy: next due one interval (±10 %) after its test.
    let row = key_row(&app, id).await;
    let delay = row.next_check_at.unwrap() - row.last_checked_at.unwrap();
    assert!(
        delay >= ChronoDuration::minutes(54) && delay <= ChronoDuration::minutes(66),
        "{delay}"
    );
    assert!(row.lease_owner.is_none() && row.lease_expires_at.is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(history(&app, id, Some("worker")).await.is_empty(), "not due yet");

    let before = entity::now();
    make_due(&app, id).await;
    let checked = eventually(Duration::from_secs(5), "the worker's check", || async {
        let rows = history(&app, id, Some("worker")).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert!(checked[0].ok && checked[0].error_code.is_none() && checked[0].latency_ms.is_some());
    assert!(checked[0].checked_at >= before);
    let row = eventually(Duration::from_secs(5), "the lease to be released", || async {
        let row = key_row(&app, id).await;
        row.lease_owner.is_none().then_some(row)
    })
    .await;
    assert!(row.lease_expires_at.is_none());
    assert_eq!(row.status, "HEALTHY");
    assert!(row.last_checked_at.unwrap() >= before);
    let delay = row.next_check_at.unwrap() - entity::now();
    assert!(
        delay >= ChronoDuration::minutes(53) && delay <= ChronoDuration::minutes(66),
        "{delay}"
    );

    // Checked once: it is not due again for an hour.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(history(&app, id, Some("worker")).await.len(), 1);

    // Usage counts the creation's test and the worker's.
    let (calls, errors, buckets) = usage_totals(&app, &token, &id.to_string()).await;
    assert_eq!((calls, errors), (2, 0), "{buckets:?}");
    assert!(buckets.iter().all(|b| b["p50LatencyMs"].is_i64()));

    // A routine check that changes nothing is history, not audit: the
    // append-only log holds only the creation (with its test).
    let audit = audit_nodes(&app, &token, &id.to_string()).await;
    let actions: Vec<&str> = audit.iter().map(|n| n["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["connection.created"], "{audit:?}");
}

async fn statuses_follow_the_machine(backend: Backend) {
    let app = TestApp::spawn_with(backend, with_worker("1s")).await;
    let token = app.token_for(Uuid::new_v4());

    // REVOKED is never checked, even when its row says it is due.
    let revoked = uuid(&connect(&app, &token, "Gone", "wk2r").await["id"]);
    app.ok(
        &token,
        "mutation($id: ID!) { revokeConnection(id: $id) { id } }",
        json!({ "id": revoked.to_string() }),
    )
    .await;
    assert!(key_row(&app, revoked).await.next_check_at.is_none());
    make_due(&app, revoked).await;

    // A hard failure: FAILING at once, and not retried until the user acts.
    let hard = uuid(&connect(&app, &token, "Hard", "wk2h").await["id"]);
    app.binance.remove_key(&binance_key("wk2h").0);
    let row = eventually(Duration::from_secs(5), "FAILING after a hard failure", || async {
        let row = key_row(&app, hard).await;
        (row.status == "FAILING").then_some(row)
    })
    .await;
    assert_eq!(row.consecutive_failures, 1);
    assert_eq!(row.last_error.as_ref().unwrap()["code"], "INVALID_CREDENTIALS");
    assert!(row.next_check_at.is_none(), "not scheduled again");

    // Transient failures: DEGRADED, then FAILING after several in a row,
    // and still checked.
    let soft = uuid(&connect(&app, &token, "Soft", "wk2s").await["id"]);
    app.binance.set_failure(Some(MockFailure::ServerError));
    let row = eventually(Duration::from_secs(10), "FAILING after transient failures", || async {
        let row = key_row(&app, soft).await;
        (row.status == "FAILING").then_some(row)
    })
    .await;
    assert!(row.consecutive_failures >= 3, "{}", row.consecutive_failures);
    assert_eq!(row.last_error.as_ref().unwrap()["code"], "EXCHANGE_UNAVAILABLE");
    assert!(row.next_check_at.is_some(), "transient failures are retried");
    let changes: Vec<(String, String)> = audit_nodes(&app, &token, &soft.to_string())
        .await
        .iter()
        .filter(|n| n["action"] == "connection.status_changed")
        .map(|n| {
            assert_eq!(n["actor"], "system:health-monitor", "{n}");
            (
                n["details"]["from"].as_str().unwrap().to_string(),
                n["details"]["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Newest first.
    assert_eq!(
        changes,
        vec![
            ("DEGRADED".to_string(), "FAILING".to_string()),
            ("HEALTHY".to_string(), "DEGRADED".to_string()),
        ]
    );
    let soft_failures = history(&app, soft, Some("worker")).await;
    assert!(soft_failures.len() >= 3 && soft_failures.iter().all(|c| !c.ok));

    // The hard failure was checked once; the revoked connection never.
    assert_eq!(history(&app, hard, Some("worker")).await.len(), 1);
    assert!(history(&app, revoked, None).await.iter().all(|c| c.source == "manual"));

    // The exchange recovers: so does the connection.
    app.binance.set_failure(None);
    eventually(Duration::from_secs(5), "HEALTHY again", || async {
        (key_row(&app, soft).await.status == "HEALTHY").then_some(())
    })
    .await;

    // A manual test of the hard-failed key, after the user fixed it, schedules it again.
    let (key, secret) = binance_key("wk2h");
    app.binance.add_hmac_key(&key, &secret, MockPermissions::default());
    app.ok(
        &token,
        "mutation($id: ID!) { testConnection(id: $id) { ok } }",
        json!({ "id": hard.to_string() }),
    )
    .await;
    let row = key_row(&app, hard).await;
    assert_eq!(row.status, "HEALTHY");
    assert!(row.next_check_at.is_some());
}

async fn claims_are_disjoint_and_lapsed_leases_reclaimed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let mut ids = HashSet::new();
    for n in 0..12 {
        let (key, secret) = binance_key(&format!("cl{n:02}"));
        let mut input = create_input(&format!("Claim {n}"), &key, &secret);
        input["input"]["testFirst"] = json!(false);
        let created = app.ok(&token, &create_mutation(), input).await;
        assert_eq!(created["createConnection"]["status"], "PENDING");
        ids.insert(uuid(&created["createConnection"]["id"]));
    }

    // Two claimers at once, over the same due set: disjoint, and together all of it.
    let lease = Duration::from_secs(1);
    let (a, b) = (app.services.clone(), app.services.clone());
    let a = tokio::spawn(async move { a.claim_due("worker-a", 8, lease).await });
    let b = tokio::spawn(async move { b.claim_due("worker-b", 8, lease).await });
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    let a_ids: HashSet<Uuid> = a.iter().map(|c| c.connection_id).collect();
    let b_ids: HashSet<Uuid> = b.iter().map(|c| c.connection_id).collect();
    assert!(a_ids.is_disjoint(&b_ids), "{a_ids:?} {b_ids:?}");
    assert_eq!(a.len() + b.len(), 12);
    assert_eq!(&a_ids | &b_ids, ids);
    assert!(a.iter().chain(&b).all(|c| !c.reclaimed));
    assert!(app.services.claim_due("worker-c", 100, lease).await.unwrap().is_empty());
    for claim in &a {
        assert_eq!(
            key_row(&app, claim.connection_id).await.lease_owner.as_deref(),
            Some("worker-a")
        );
    }

    // Only the holder gives a lease back.
    let given_back = a[0].connection_id;
    app.services
        .release_lease(given_back, "worker-b", Some(None))
        .await
        .unwrap();
    assert_eq!(key_row(&app, given_back).await.lease_owner.as_deref(), Some("worker-a"));
    assert!(key_row(&app, given_back).await.next_check_at.is_some());
    app.services
        .release_lease(given_back, "worker-a", Some(None))
        .await
        .unwrap();
    let row = key_row(&app, given_back).await;
    assert!(row.lease_owner.is_none() && row.next_check_at.is_none());

    // A renewed lease holds past its first deadline; a lapsed one is claimed again.
    assert_eq!(
        app.services
            .renew_leases("worker-b", Duration::from_secs(30))
            .await
            .unwrap(),
        b.len() as u64
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let d = app.services.claim_due("worker-d", 100, lease).await.unwrap();
    let d_ids: HashSet<Uuid> = d.iter().map(|c| c.connection_id).collect();
    let mut expected = a_ids.clone();
    expected.remove(&given_back);
    assert_eq!(d_ids, expected, "worker-a's lapsed leases, not worker-b's renewed ones");
    assert!(d.iter().all(|c| c.reclaimed));
}

async fn retention_keeps_the_newest_checks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = Uuid::new_v4();
    let token = app.token_for(user);
    let busy = uuid(&connect(&app, &token, "Busy", "rt1").await["id"]);
    let quiet = uuid(&connect(&app, &token, "Quiet", "rt2").await["id"]);
    let now = entity::now();
    for (id, n) in [(busy, 10), (quiet, 1)] {
        for hours in 1..=n {
            checks::Entity::insert(checks::ActiveModel {
                id: Set(Uuid::now_v7()),
                connection_id: Set(id),
                user_id: Set(user),
                checked_at: Set(now - ChronoDuration::hours(hours)),
                ok: Set(true),
                latency_ms: Set(Some(5)),
                error_code: Set(None),
                error_message: Set(None),
                source: Set("worker".into()),
            })
            .exec_without_returning(&app.db)
            .await
            .unwrap();
        }
    }
    // 11 and 2 rows (with the creation's check): only the busy one is over 3.
    assert_eq!(app.services.prune_health_checks(3, 1000).await.unwrap(), 8);
    let kept = history(&app, busy, None).await;
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[0].source, "manual", "the newest (creation) check is kept");
    assert!(kept[1..].iter().all(|c| c.checked_at >= now - ChronoDuration::hours(2)));
    assert_eq!(history(&app, quiet, None).await.len(), 2);
    assert_eq!(app.services.prune_health_checks(3, 1000).await.unwrap(), 0);

    // Batches bound each statement.
    assert_eq!(app.services.prune_health_checks(1, 1).await.unwrap(), 1);
    while app.services.prune_health_checks(1, 1).await.unwrap() > 0 {}
    for id in [busy, quiet] {
        let kept = history(&app, id, None).await;
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].source, "manual");
    }
}

async fn connection_usage_buckets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = Uuid::new_v4();
    let token = app.token_for(user);
    let id = connect(&app, &token, "Used", "us1").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let test = "mutation($id: ID!) { testConnection(id: $id) { ok error { code } } }";
    for _ in 0..2 {
        assert_eq!(
            app.ok(&token, test, json!({ "id": id })).await["testConnection"]["ok"],
            true
        );
    }
    app.binance.set_failure(Some(MockFailure::ServerError));
    let failed = app.ok(&token, test, json!({ "id": id })).await;
    assert_eq!(failed["testConnection"]["error"]["code"], "EXCHANGE_UNAVAILABLE");
    app.binance.set_failure(None);

    let (calls, errors, buckets) = usage_totals(&app, &token, &id).await;
    assert_eq!((calls, errors), (4, 1), "{buckets:?}");
    let last = buckets.last().unwrap();
    assert_eq!(
        last["errorsByCode"],
        json!([{ "code": "EXCHANGE_UNAVAILABLE", "count": 1 }])
    );
    let bounds = exchange_connections::service::usage::LATENCY_BOUNDS_MS;
    assert!(
        bounds.contains(&(last["p50LatencyMs"].as_i64().unwrap() as u32)),
        "{last}"
    );
    assert!(
        last["weightUsed"].as_i64().unwrap() > 0,
        "Binance reports its used weight: {last}"
    );

    // Percentiles from a known histogram, and the range filter.
    let hour = |ago: i64| {
        let at = Utc::now() - ChronoDuration::hours(ago);
        at.date_naive()
            .and_hms_opt(chrono::Timelike::hour(&at), 0, 0)
            .unwrap()
            .and_utc()
    };
    let connection_id = Uuid::parse_str(&id).unwrap();
    for (ago, histogram, weight) in [(3, json!({"25": 90, "1000": 10}), 120), (30, json!({"50": 1}), 7)] {
        usage::Entity::insert(usage::ActiveModel {
            connection_id: Set(connection_id),
            bucket_start: Set(hour(ago)),
            user_id: Set(user),
            calls: Set(103),
            errors: Set(3),
            errors_by_code: Set(json!({"NETWORK_ERROR": 1, "RATE_LIMITED": 2})),
            latency_histogram: Set(histogram),
            weight_used: Set(weight),
        })
        .exec_without_returning(&app.db)
        .await
        .unwrap();
    }
    let data = app
        .ok(
            &token,
            USAGE_QUERY,
            json!({ "id": id, "from": hour(4).to_rfc3339(), "to": hour(2).to_rfc3339() }),
        )
        .await;
    let buckets = data["connectionUsage"].as_array().unwrap();
    assert_eq!(buckets.len(), 1, "{data}");
    let bucket = &buckets[0];
    assert_eq!(
        bucket["bucketStart"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        hour(3)
    );
    assert_eq!(
        (bucket["calls"].as_i64(), bucket["errors"].as_i64()),
        (Some(103), Some(3))
    );
    assert_eq!(
        (bucket["p50LatencyMs"].as_i64(), bucket["p95LatencyMs"].as_i64()),
        (Some(25), Some(1000))
    );
    assert_eq!(bucket["weightUsed"], 120);
    assert_eq!(
        bucket["errorsByCode"],
        json!([{ "code": "RATE_LIMITED", "count": 2 }, { "code": "NETWORK_ERROR", "count": 1 }])
    );
    // The default range is the last 24 hours: the 30-hour-old bucket is left out, oldest first.
    let (_, _, buckets) = usage_totals(&app, &token, &id).await;
    assert_eq!(buckets.len(), 2, "{buckets:?}");
    assert_eq!(buckets[0]["weightUsed"], 120);
}

async fn connection_usage_bad_inputs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Uuid::new_v4());
    let other = app.token_for(Uuid::new_v4());
    let id = connect(&app, &token, "Mine", "ub1").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let now = Utc::now();
    let at = |days: i64| (now - ChronoDuration::days(days)).to_rfc3339();

    let error = app
        .err(
            &token,
            USAGE_QUERY,
            json!({ "id": id, "from": at(0), "to": at(1) }),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "from");
    let error = app
        .err(
            &token,
            USAGE_QUERY,
            json!({ "id": id, "from": at(32), "to": at(0) }),
            "BAD_USER_INPUT",
        )
        .await;
    assert_eq!(error["extensions"]["field"], "to");
    app.ok(&token, USAGE_QUERY, json!({ "id": id, "from": at(31), "to": at(0) }))
        .await;
    app.err(&token, USAGE_QUERY, json!({ "id": "nope" }), "BAD_USER_INPUT")
        .await;
    app.err(&token, USAGE_QUERY, json!({ "id": Uuid::new_v4() }), "NOT_FOUND")
        .await;
    // Another user's connection does not exist for them.
    app.err(&other, USAGE_QUERY, json!({ "id": id }), "NOT_FOUND").await;
    let (_, body) = app.gql(None, USAGE_QUERY, json!({ "id": id })).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{body}");
    let (_, body) = app
        .gql(Some(&token), USAGE_QUERY, json!({ "id": id, "from": "yesterday" }))
        .await;
    assert!(body["errors"].is_array() && body["data"].is_null(), "{body}");
}

const SUMMARY_QUERY: &str = "{ healthSummary { total byStatus { status count }
    byExchange { exchange total byStatus { status count } }
    recentFailures { connectionId label exchange code message at source } } }";

fn status_count(list: &Value, status: &str) -> i64 {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == status)
        .map(|s| s["count"].as_i64().unwrap())
        .unwrap_or_else(|| panic!("{status} listed: {list}"))
}

async fn health_summary_counts_and_isolation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.token_for(Uuid::new_v4()), app.token_for(Uuid::new_v4()));
    let test = "mutation($id: ID!) { testConnection(id: $id) { ok } }";

    connect(&app, &a, "Healthy", "hs1").await;
    let failing = connect(&app, &a, "Failing", "hs2").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.binance.remove_key(&binance_key("hs2").0);
    app.ok(&a, test, json!({ "id": failing })).await;
    let gone = connect(&app, &a, "Gone", "hs3").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.binance.remove_key(&binance_key("hs3").0);
    app.ok(&a, test, json!({ "id": gone })).await;
    app.ok(
        &a,
        "mutation($id: ID!) { revokeConnection(id: $id) { id } }",
        json!({ "id": gone }),
    )
    .await;
    connect(&app, &b, "B's", "hs4").await;

    let summary = app.ok(&a, SUMMARY_QUERY, json!({})).await["healthSummary"].clone();
    assert_eq!(summary["total"], 3);
    let statuses = &summary["byStatus"];
    assert_eq!(statuses.as_array().unwrap().len(), 6, "every status, zeros included");
    for (status, count) in [
        ("HEALTHY", 1),
        ("FAILING", 1),
        ("REVOKED", 1),
        ("DEGRADED", 0),
        ("PENDING", 0),
    ] {
        assert_eq!(status_count(statuses, status), count, "{status}: {summary}");
    }
    let exchanges = summary["byExchange"].as_array().unwrap();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0]["exchange"], "BINANCE");
    assert_eq!(exchanges[0]["total"], 3);
    assert_eq!(status_count(&exchanges[0]["byStatus"], "FAILING"), 1);
    // The revoked connection's failure is history, not a current problem.
    let failures = summary["recentFailures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{summary}");
    assert_eq!(failures[0]["connectionId"], failing.as_str());
    assert_eq!(failures[0]["label"], "Failing");
    assert_eq!(failures[0]["exchange"], "BINANCE");
    assert_eq!(failures[0]["code"], "INVALID_CREDENTIALS");
    assert_eq!(failures[0]["source"], "manual");
    assert!(!failures[0]["message"].as_str().unwrap().is_empty());

    // User B sees only their own numbers.
    let summary = app.ok(&b, SUMMARY_QUERY, json!({})).await["healthSummary"].clone();
    assert_eq!(summary["total"], 1);
    assert_eq!(status_count(&summary["byStatus"], "HEALTHY"), 1);
    assert_eq!(status_count(&summary["byStatus"], "FAILING"), 0);
    assert_eq!(summary["recentFailures"], json!([]));
    // A user with nothing gets zeros.
    let empty = app.token_for(Uuid::new_v4());
    let summary = app.ok(&empty, SUMMARY_QUERY, json!({})).await["healthSummary"].clone();
    assert_eq!(
        (summary["total"].as_i64(), summary["byExchange"].clone()),
        (Some(0), json!([]))
    );
}

async fn a_recorded_check_gives_back_only_its_own_lease(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = Uuid::new_v4();
    let token = app.token_for(user);
    let id = uuid(&connect(&app, &token, "Lease", "ls1").await["id"]);
    let lease = Duration::from_secs(60);

    // The holder's check gives the lease back with its outcome.
    make_due(&app, id).await;
    let claims = app.services.claim_due("worker-a", 10, lease).await.unwrap();
    assert_eq!(claims.iter().map(|c| c.connection_id).collect::<Vec<_>>(), [id]);
    app.services.check_connection(id, user, "worker-a").await.unwrap();
    let row = key_row(&app, id).await;
    assert!(row.lease_owner.is_none() && row.lease_expires_at.is_none(), "{row:?}");
    assert_eq!(history(&app, id, Some("worker")).await.len(), 1);
    assert!(row.next_check_at.unwrap() > entity::now(), "rescheduled by the outcome");

    // A worker whose lease was taken over records its outcome but leaves the new holder's lease alone.
    make_due(&app, id).await;
    app.services.claim_due("worker-b", 10, lease).await.unwrap();
    let held = key_row(&app, id).await.lease_expires_at;
    app.services.check_connection(id, user, "worker-a").await.unwrap();
    let row = key_row(&app, id).await;
    assert_eq!(row.lease_owner.as_deref(), Some("worker-b"));
    assert_eq!(row.lease_expires_at, held);
    assert_eq!(history(&app, id, Some("worker")).await.len(), 2);
}

on_both_backends!(
    due_connection_is_checked_by_the_worker,
    statuses_follow_the_machine,
    claims_are_disjoint_and_lapsed_leases_reclaimed,
    retention_keeps_the_newest_checks,
    connection_usage_buckets,
    connection_usage_bad_inputs,
    health_summary_counts_and_isolation,
    a_recorded_check_gives_back_only_its_own_lease,
);

/// A `worker` process; killed (SIGKILL) when dropped.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(app: &TestApp, dir: &TempDir) -> Self {
        let base = app.binance.base_url.as_str().trim_end_matches('/').to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_exchange-connections"))
            .arg("worker")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.urls.worker)
            .env("ENCRYPTION_KEYS", ENCRYPTION_KEY)
            .env("BINANCE_BASE_URL", &base)
            .env("BINANCE_TESTNET_BASE_URL", &base)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("WORKER_LEASE", "2s")
            .env("WORKER_POLL_INTERVAL", "100ms")
            .env("HEALTH_CHECK_INTERVAL", "5m")
            .env("DATA_DIR", dir.0.join("data"))
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a worker");
        Self(child)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two `worker` processes on one PostgreSQL database: the first is killed
/// while it holds a connection's lease (its check held by a slow exchange);
/// the second checks that connection once the lease lapses, never before.
#[tokio::test]
async fn killed_worker_lease_is_picked_up_by_another_process() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let dir = TempDir::new();
    let token = app.token_for(Uuid::new_v4());
    let id = uuid(&connect(&app, &token, "Held", "kw1").await["id"]);
    app.binance
        .hold_key(&binance_key("kw1").0, Some(Duration::from_secs(60)));
    make_due(&app, id).await;

    let mut first = WorkerProcess::start(&app, &dir);
    let owner = eventually(Duration::from_secs(15), "the first worker's claim", || async {
        key_row(&app, id).await.lease_owner
    })
    .await;
    let _second = WorkerProcess::start(&app, &dir);
    // Past the 2 s lease: the first worker renews it while its check is in flight.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(key_row(&app, id).await.lease_owner.as_deref(), Some(owner.as_str()));
    assert!(history(&app, id, Some("worker")).await.is_empty());

    first.0.kill().expect("SIGKILL the first worker");
    first.0.wait().unwrap();
    let lapses_at = key_row(&app, id)
        .await
        .lease_expires_at
        .expect("the dead worker's lease");
    app.binance.hold_key(&binance_key("kw1").0, None);

    let checked = eventually(Duration::from_secs(10), "the second worker's check", || async {
        let rows = history(&app, id, Some("worker")).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(checked.len(), 1);
    assert!(checked[0].ok);
    assert!(
        checked[0].checked_at >= lapses_at,
        "checked at {} before the lease lapsed at {lapses_at}",
        checked[0].checked_at
    );
    let row = eventually(Duration::from_secs(5), "the lease released", || async {
        let row = key_row(&app, id).await;
        row.lease_owner.is_none().then_some(row)
    })
    .await;
    assert_eq!(row.status, "HEALTHY");
    assert!(row.next_check_at.unwrap() > entity::now() + ChronoDuration::minutes(4));
}

/// SIGTERM: the worker stops claiming, gives its leases back and exits cleanly.
#[tokio::test]
async fn worker_process_stops_gracefully_and_releases_its_leases() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let dir = TempDir::new();
    let token = app.token_for(Uuid::new_v4());
    let id = uuid(&connect(&app, &token, "Slow", "kw2").await["id"]);
    app.binance
        .hold_key(&binance_key("kw2").0, Some(Duration::from_secs(60)));
    make_due(&app, id).await;
    let mut worker = WorkerProcess::start(&app, &dir);
    eventually(Duration::from_secs(15), "the worker's claim", || async {
        key_row(&app, id).await.lease_owner
    })
    .await;
    let pid = worker.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = worker.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit}");
    let row = key_row(&app, id).await;
    assert!(
        row.lease_owner.is_none() && row.lease_expires_at.is_none(),
        "abandoned check's lease released"
    );
    assert!(history(&app, id, Some("worker")).await.is_empty());
    // It needed no JWT settings and made no development secrets.
    assert!(!dir.0.join("data/dev-secrets.json").exists());
}

/// The worker never migrates: it refuses to start on an unmigrated database.
#[test]
fn worker_refuses_a_database_with_pending_migrations() {
    let dir = TempDir::new();
    let output = Command::new(env!("CARGO_BIN_EXE_exchange-connections"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.0.join("empty.db").display()),
        )
        .env("ENCRYPTION_KEYS", ENCRYPTION_KEY)
        .current_dir(&dir.0)
        .output()
        .expect("run the worker");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("exchange-connections migrate"), "{stderr}");
}
