//! Key rotation: re-seals every stored secret under the key ring's primary
//! key (`exchange-connections rekey`), and counts stored secrets per key
//! version for the `stored_secrets` gauge. All of its database access is in
//! this module, inside transactions opened by [`begin`].
//!
//! A run walks `exchange_keys` by id (keyset pagination), one batch per
//! transaction. Each row is locked while it is re-sealed (`FOR UPDATE` on
//! PostgreSQL, `BEGIN IMMEDIATE` on SQLite), so a concurrent `rotateKeys`
//! or Kite login is never overwritten with older credentials. Only rows with
//! a secret under another key, or a stale `key_version`, are written, so a
//! run that crashed is finished by simply running again. A row that no
//! configured key opens is reported by id and skipped.

use super::RequestContext;
use super::audit::{self, action};
use super::tenancy::{TenantDb, TenantTxn};
use crate::crypto::{CryptoError, KeyRing, SecretField, SecretOwner};
use crate::error::{AppError, AppResult};
use entity::exchange_keys as keys;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use uuid::Uuid;

/// The actor written in the audit entries of a rekey.
pub const ACTOR: &str = "system:rekey";
/// The `key` label of secrets whose row records no key version.
pub const UNRECORDED: &str = "(none)";
/// Rows per batch unless told otherwise.
pub const DEFAULT_BATCH_SIZE: u64 = 500;
/// Batches in flight unless told otherwise.
pub const DEFAULT_PARALLEL: usize = 2;
/// Attempts per batch: a deadlock or lost connection aborts only that
/// batch's transaction, which is then simply tried again.
const ATTEMPTS: u32 = 3;

/// The token columns, in the order they are checked.
const FIELDS: [SecretField; 4] = [
    SecretField::ApiKey,
    SecretField::ApiSecret,
    SecretField::Passphrase,
    SecretField::AccessToken,
];

fn column(field: SecretField) -> keys::Column {
    match field {
        SecretField::ApiKey => keys::Column::ApiKeyEncrypted,
        SecretField::ApiSecret => keys::Column::ApiSecretEncrypted,
        SecretField::Passphrase => keys::Column::PassphraseEncrypted,
        SecretField::AccessToken => keys::Column::AccessTokenEncrypted,
    }
}

/// Opens every transaction of this module, acting as the system (row-level
/// security on PostgreSQL: every user's rows). A writing transaction on
/// SQLite takes its write lock at once (`IMMEDIATE`), so no other writer
/// commits between the batch's read and its writes.
async fn begin(db: &TenantDb, write: bool) -> AppResult<TenantTxn> {
    Ok(if write {
        db.as_system_writing().await?
    } else {
        db.as_system().await?
    })
}

/// The columns of a row that a rekey reads. No `Debug`: it holds ciphertext.
#[derive(FromQueryResult)]
struct StoredRow {
    id: Uuid,
    user_id: Uuid,
    api_key_encrypted: Option<String>,
    api_secret_encrypted: Option<String>,
    passphrase_encrypted: Option<String>,
    access_token_encrypted: Option<String>,
    key_version: Option<String>,
}

impl StoredRow {
    fn token(&self, field: SecretField) -> Option<&str> {
        match field {
            SecretField::ApiKey => self.api_key_encrypted.as_deref(),
            SecretField::ApiSecret => self.api_secret_encrypted.as_deref(),
            SecretField::Passphrase => self.passphrase_encrypted.as_deref(),
            SecretField::AccessToken => self.access_token_encrypted.as_deref(),
        }
    }

    fn secrets(&self) -> u64 {
        FIELDS.iter().filter(|field| self.token(**field).is_some()).count() as u64
    }

    fn key_label(&self) -> String {
        key_label(self.key_version.as_deref())
    }
}

fn key_label(key_version: Option<&str>) -> String {
    key_version.unwrap_or(UNRECORDED).to_owned()
}

/// What a row needs.
enum Plan {
    /// Every secret is under the primary key and the row records it.
    Current,
    /// Store these re-sealed tokens and record the primary key version.
    /// Empty `resealed`: only the recorded version was stale.
    Write {
        resealed: Vec<(SecretField, String)>,
        from_keys: BTreeSet<String>,
    },
    /// A secret no configured key opens (or not sealed for this row): left as it is.
    Unreadable { field: SecretField, reason: CryptoError },
}

/// Opens each of the row's secrets and re-seals those under an older key.
/// Plaintext lives only inside this function, in wiped-on-drop strings.
fn plan(keyring: &KeyRing, row: &StoredRow) -> Plan {
    let owner = SecretOwner {
        user_id: row.user_id,
        connection_id: row.id,
    };
    let mut resealed = Vec::new();
    let mut from_keys = BTreeSet::new();
    for field in FIELDS {
        let Some(token) = row.token(field) else { continue };
        let (secret, key_id) = match keyring.open_with_key_id(&owner, field, token) {
            Ok(opened) => opened,
            Err(reason) => return Plan::Unreadable { field, reason },
        };
        if keyring.needs_rekey(&key_id) {
            match keyring.seal(&owner, field, &secret) {
                Ok(sealed) => resealed.push((field, sealed.token)),
                Err(reason) => return Plan::Unreadable { field, reason },
            }
            from_keys.insert(key_id);
        }
    }
    if resealed.is_empty() && row.key_version.as_deref() == Some(keyring.primary_key_id()) {
        Plan::Current
    } else {
        Plan::Write { resealed, from_keys }
    }
}

/// A row to write: its re-sealed tokens (empty: only the key version was
/// stale) and the ids of the keys they were under.
struct RowWrite<'a> {
    row: &'a StoredRow,
    resealed: Vec<(SecretField, String)>,
    from_keys: BTreeSet<String>,
}

/// How a rekey runs.
#[derive(Debug, Clone, Copy)]
pub struct RekeyOptions {
    /// Rows read (and locked) per transaction.
    pub batch_size: u64,
    /// Batches in flight at once (each on its own connection). The time
    /// goes mostly to round trips, so two keep both the database and the
    /// process busy; one is strictly sequential.
    pub parallel: usize,
    /// Only count: open every secret, write nothing.
    pub dry_run: bool,
}

impl Default for RekeyOptions {
    fn default() -> Self {
        Self {
            batch_size: DEFAULT_BATCH_SIZE,
            parallel: DEFAULT_PARALLEL,
            dry_run: false,
        }
    }
}

/// A row that was skipped because one of its secrets cannot be opened.
/// Carries the connection id and which secret, never any content.
#[derive(Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub connection_id: Uuid,
    pub field: SecretField,
    pub reason: CryptoError,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connection {} ({}): {}",
            self.connection_id,
            self.field.as_str(),
            self.reason
        )
    }
}

/// Counts of one batch, or of a whole run so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Rows holding at least one secret that were looked at.
    pub scanned: u64,
    /// Rows with at least one secret re-sealed (one audit entry each).
    pub rows_resealed: u64,
    /// Secrets re-sealed (in a dry run: that would be).
    pub secrets_resealed: u64,
    /// Rows whose secrets were all under the primary key but whose
    /// recorded key version was not; only the version was rewritten.
    pub rows_relabelled: u64,
    /// Rows skipped because a secret cannot be opened.
    pub unreadable: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.scanned += other.scanned;
        self.rows_resealed += other.rows_resealed;
        self.secrets_resealed += other.secrets_resealed;
        self.rows_relabelled += other.rows_relabelled;
        self.unreadable += other.unreadable;
    }
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct BatchReport {
    pub counts: Counts,
    pub unreadable: Vec<Unreadable>,
    /// Secrets whose row moved from a recorded key version (label) to the primary.
    moved: BTreeMap<String, u64>,
}

/// What every batch of a run shares.
struct Shared {
    db: TenantDb,
    keyring: Arc<KeyRing>,
    options: RekeyOptions,
    /// Correlates this run's audit entries (their `request_id`).
    run_id: String,
}

/// The ids a batch covers: after `after` (exclusive) up to `up_to` (inclusive).
#[derive(Debug, Clone, Copy)]
struct Range {
    after: Option<Uuid>,
    up_to: Uuid,
}

/// A batch's rows, read in `txn` (and, unless a dry run, locked).
struct Claimed {
    txn: TenantTxn,
    rows: Vec<StoredRow>,
}

/// One run of `rekey`: call [`Rekey::next_batch`] until it returns `None`.
/// Dropping it (or a crash) loses nothing: every batch commits on its own,
/// batches in flight roll back, and the next run skips what is done.
pub struct Rekey {
    shared: Arc<Shared>,
    /// The last id claimed by a batch.
    cursor: Option<Uuid>,
    /// Every row has been claimed.
    exhausted: bool,
    in_flight: JoinSet<AppResult<BatchReport>>,
    /// Rows holding secrets when the run started.
    total_rows: u64,
    totals: Counts,
    /// Stored secrets per recorded key version: at the start, then moved by this run's writes.
    by_key: BTreeMap<String, u64>,
}

impl Rekey {
    /// Prepares a run: counts the rows and the stored secrets per key version.
    pub async fn start(db: DatabaseConnection, keyring: Arc<KeyRing>, options: RekeyOptions) -> AppResult<Self> {
        if options.batch_size == 0 {
            return Err(AppError::bad_input("batch_size", "must be at least 1"));
        }
        if options.parallel == 0 {
            return Err(AppError::bad_input("parallel", "must be at least 1"));
        }
        let mut options = options;
        let db = TenantDb::new(db);
        if db.backend() == DbBackend::Sqlite {
            // One writer at a time: a second batch would only wait for the first.
            options.parallel = 1;
        }
        let total_rows = rows_with_secrets(&db).await?;
        let by_key = stored_secrets_by_key(&db).await?;
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                keyring,
                options,
                run_id: format!("rekey-{}", Uuid::now_v7()),
            }),
            cursor: None,
            exhausted: false,
            in_flight: JoinSet::new(),
            total_rows,
            totals: Counts::default(),
            by_key,
        })
    }

    pub fn options(&self) -> RekeyOptions {
        self.shared.options
    }

    /// The `request_id` of this run's audit entries.
    pub fn run_id(&self) -> &str {
        &self.shared.run_id
    }

    /// Rows holding secrets when the run started.
    pub fn total_rows(&self) -> u64 {
        self.total_rows
    }

    /// Counts of the batches done so far.
    pub fn totals(&self) -> &Counts {
        &self.totals
    }

    /// Stored secrets per recorded key version (`(none)`: unrecorded), as
    /// counted at the start and moved by this run's writes (in a dry run:
    /// as they would be). Every ring key is listed, with 0 if it holds none.
    pub fn by_key(&self) -> BTreeMap<String, u64> {
        let mut by_key = self.by_key.clone();
        for id in self.shared.keyring.key_ids() {
            by_key.entry(id.to_owned()).or_insert(0);
        }
        by_key
    }

    /// Waits for the next batch to commit (keeping up to `parallel` in
    /// flight) and returns what it did; `None` when every row was seen.
    pub async fn next_batch(&mut self) -> AppResult<Option<BatchReport>> {
        while !self.exhausted && self.in_flight.len() < self.shared.options.parallel {
            let claimed = retry(|| claim(&self.shared, self.cursor, None)).await?;
            let Some(up_to) = claimed.rows.last().map(|row| row.id) else {
                self.exhausted = true;
                break;
            };
            let range = Range {
                after: self.cursor,
                up_to,
            };
            self.cursor = Some(up_to);
            self.in_flight.spawn(run_batch(self.shared.clone(), range, claimed));
        }
        let report = match self.in_flight.join_next().await {
            None => return Ok(None),
            Some(Ok(report)) => report?,
            Some(Err(join)) => return Err(AppError::internal(join)),
        };
        self.totals.add(&report.counts);
        let keyring = &self.shared.keyring;
        let primary = keyring.primary_key_id().to_owned();
        for (from, secrets) in &report.moved {
            if let Some(count) = self.by_key.get_mut(from) {
                *count = count.saturating_sub(*secrets);
            }
            *self.by_key.entry(primary.clone()).or_insert(0) += secrets;
        }
        let ring_keys = keyring.key_ids();
        self.by_key
            .retain(|key, count| *count > 0 || ring_keys.contains(&key.as_str()));
        Ok(Some(report))
    }
}

/// Runs `attempt` up to [`ATTEMPTS`] times while it fails on the database.
async fn retry<T, F, Fut>(mut attempt: F) -> AppResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = AppResult<T>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(AppError::Internal(error)) if tries < ATTEMPTS => {
                tracing::warn!(error = %format!("{error:#}"), attempt = tries, "rekey batch failed; retrying it");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                tries += 1;
            }
            outcome => return outcome,
        }
    }
}

/// Reads the rows after `after` (the next `batch_size`, or those up to
/// `up_to` when a failed batch is tried again) in a new transaction that
/// locks them (a dry run only reads).
async fn claim(shared: &Shared, after: Option<Uuid>, up_to: Option<Uuid>) -> AppResult<Claimed> {
    let write = !shared.options.dry_run;
    let txn = begin(&shared.db, write).await?;
    let rows = read_rows(&txn, after, up_to, shared.options.batch_size, write).await?;
    Ok(Claimed { txn, rows })
}

/// Processes a claimed batch and commits it; a failure rolls it back and
/// the same range is claimed and processed again.
async fn run_batch(shared: Arc<Shared>, range: Range, claimed: Claimed) -> AppResult<BatchReport> {
    let mut claimed = Some(claimed);
    retry(|| {
        let first = claimed.take();
        let shared = &shared;
        async move {
            let Claimed { txn, rows } = match first {
                Some(claimed) => claimed,
                None => claim(shared, range.after, Some(range.up_to)).await?,
            };
            let report = process(shared, &txn, &rows, !shared.options.dry_run).await?;
            txn.commit().await?;
            Ok(report)
        }
    })
    .await
}

/// Plans every row; when `write`, stores the re-sealed rows and audits
/// them (in user order, so concurrent batches take users' audit-chain
/// locks in the same order and cannot deadlock on them).
async fn process(
    shared: &Shared,
    conn: &impl ConnectionTrait,
    rows: &[StoredRow],
    write: bool,
) -> AppResult<BatchReport> {
    let keyring = &shared.keyring;
    let primary = keyring.primary_key_id();
    let mut report = BatchReport::default();
    let mut writes = Vec::new();
    for row in rows {
        report.counts.scanned += 1;
        match plan(keyring, row) {
            Plan::Current => {}
            Plan::Unreadable { field, reason } => {
                report.counts.unreadable += 1;
                report.unreadable.push(Unreadable {
                    connection_id: row.id,
                    field,
                    reason,
                });
            }
            Plan::Write { resealed, from_keys } => {
                if resealed.is_empty() {
                    report.counts.rows_relabelled += 1;
                } else {
                    report.counts.rows_resealed += 1;
                    report.counts.secrets_resealed += resealed.len() as u64;
                }
                if row.key_version.as_deref() != Some(primary) {
                    *report.moved.entry(row.key_label()).or_insert(0) += row.secrets();
                }
                writes.push(RowWrite {
                    row,
                    resealed,
                    from_keys,
                });
            }
        }
    }
    if write {
        store(conn, &writes, primary).await?;
        writes.sort_by_key(|write| (write.row.user_id, write.row.id));
        for write in writes.iter().filter(|write| !write.resealed.is_empty()) {
            audit_rekeyed(shared, conn, write).await?;
        }
    }
    Ok(report)
}

/// The rows holding at least one secret after `after`, by id: up to `up_to`
/// when given, else the next `limit`; locked when they will be written.
async fn read_rows(
    conn: &impl ConnectionTrait,
    after: Option<Uuid>,
    up_to: Option<Uuid>,
    limit: u64,
    lock: bool,
) -> AppResult<Vec<StoredRow>> {
    let mut query = keys::Entity::find()
        .select_only()
        .columns([
            keys::Column::Id,
            keys::Column::UserId,
            keys::Column::ApiKeyEncrypted,
            keys::Column::ApiSecretEncrypted,
            keys::Column::PassphraseEncrypted,
            keys::Column::AccessTokenEncrypted,
            keys::Column::KeyVersion,
        ])
        .filter(holds_secrets());
    if let Some(after) = after {
        query = query.filter(keys::Column::Id.gt(after));
    }
    match up_to {
        Some(up_to) => query = query.filter(keys::Column::Id.lte(up_to)),
        None => query = query.limit(limit),
    }
    if lock {
        // FOR UPDATE on PostgreSQL; nothing on SQLite, whose IMMEDIATE transaction already excludes writers.
        query = query.lock_exclusive();
    }
    Ok(query
        .order_by_asc(keys::Column::Id)
        .into_model::<StoredRow>()
        .all(conn)
        .await?)
}

/// One `connection.rekeyed` entry for the connection, in its owner's log.
async fn audit_rekeyed(shared: &Shared, conn: &impl ConnectionTrait, write: &RowWrite<'_>) -> AppResult<()> {
    let row = write.row;
    let mut ctx = RequestContext::system(row.user_id, ACTOR);
    ctx.request_id = Some(shared.run_id.clone());
    let fields: Vec<&str> = write.resealed.iter().map(|(field, _)| field.as_str()).collect();
    let details = json!({
        "fromKeys": write.from_keys,
        "toKey": shared.keyring.primary_key_id(),
        "fields": fields,
    });
    audit::record(conn, &ctx, Some(row.id), action::REKEYED, details).await?;
    Ok(())
}

/// Rows that hold at least one secret (revoked rows hold none).
fn holds_secrets() -> Condition {
    FIELDS
        .iter()
        .fold(Condition::any(), |any, field| any.add(column(*field).is_not_null()))
}

/// Rows per UPDATE statement: 5 parameters each stays under SQLite's 32,766.
const ROWS_PER_UPDATE: usize = 1000;

/// Writes the re-sealed tokens and the primary key version of `writes`, one
/// statement per [`ROWS_PER_UPDATE`] rows (a round trip per row would cost
/// more than the cryptography). A column left NULL in the list keeps its
/// token. `updated_at` is left alone: nothing the user sees has changed.
async fn store(conn: &impl ConnectionTrait, writes: &[RowWrite<'_>], primary: &str) -> AppResult<()> {
    let backend = conn.get_database_backend();
    for chunk in writes.chunks(ROWS_PER_UPDATE) {
        let mut values: Vec<sea_orm::Value> = vec![primary.into()];
        let mut placeholder = |value: sea_orm::Value| {
            values.push(value);
            match backend {
                DbBackend::Postgres => format!("${}", values.len()),
                _ => "?".to_owned(),
            }
        };
        let key_version = match backend {
            DbBackend::Postgres => "$1".to_owned(),
            _ => "?".to_owned(),
        };
        let rows: Vec<String> = chunk
            .iter()
            .map(|write| {
                let mut cells = vec![placeholder(write.row.id.into())];
                for field in FIELDS {
                    let token = write.resealed.iter().find(|(f, _)| *f == field).map(|(_, t)| t.clone());
                    cells.push(placeholder(token.into()));
                }
                format!("({})", cells.join(", "))
            })
            .collect();
        let set = FIELDS
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let name = sea_orm::IdenStatic::as_str(&column(*field));
                format!("{name} = COALESCE(v.c{i}, exchange_keys.{name})")
            })
            .collect::<Vec<_>>()
            .join(", ");
        // VALUES columns are named column1… on both backends.
        let sql = format!(
            "UPDATE exchange_keys SET key_version = {key_version}, {set} FROM \
             (SELECT column1 AS id, column2 AS c0, column3 AS c1, column4 AS c2, column5 AS c3 \
              FROM (VALUES {}) AS t) AS v WHERE exchange_keys.id = v.id",
            rows.join(", ")
        );
        conn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(())
}

async fn rows_with_secrets(db: &TenantDb) -> AppResult<u64> {
    use sea_orm::PaginatorTrait;
    let txn = begin(db, false).await?;
    let rows = keys::Entity::find().filter(holds_secrets()).count(&txn).await?;
    txn.commit().await?;
    Ok(rows)
}

/// Stored secrets (token columns not NULL) per recorded key version
/// (`(none)` when a row records none). One aggregate query.
pub async fn stored_secrets_by_key(db: &TenantDb) -> AppResult<BTreeMap<String, u64>> {
    let count = |column: &str| format!("SUM(CASE WHEN {column} IS NULL THEN 0 ELSE 1 END)");
    let sql = format!(
        "SELECT key_version, {} + {} + {} + {} AS secrets FROM exchange_keys GROUP BY key_version",
        count("api_key_encrypted"),
        count("api_secret_encrypted"),
        count("passphrase_encrypted"),
        count("access_token_encrypted"),
    );
    let txn = begin(db, false).await?;
    let rows = txn.query_all_raw(Statement::from_string(db.backend(), sql)).await?;
    txn.commit().await?;
    let mut by_key = BTreeMap::new();
    for row in rows {
        let key: Option<String> = row.try_get("", "key_version")?;
        let secrets: i64 = row.try_get("", "secrets")?;
        if secrets > 0 {
            *by_key.entry(key_label(key.as_deref())).or_insert(0) += secrets as u64;
        }
    }
    Ok(by_key)
}

/// The `stored_secrets{key}` gauge: stored secrets per recorded key version.
/// Remembers the labels it set, so a version that disappears drops to 0
/// instead of keeping its last value.
#[derive(Debug, Default)]
pub struct StoredSecretsGauge {
    published: BTreeSet<String>,
}

impl StoredSecretsGauge {
    /// Sets the gauge from `by_key`: every ring key (0 when it holds none,
    /// so an old key visibly reaches 0), every version found, and 0 for
    /// versions published before that are gone.
    pub fn publish(&mut self, keyring: &KeyRing, by_key: &BTreeMap<String, u64>) {
        let mut labels: BTreeSet<String> = keyring.key_ids().into_iter().map(str::to_owned).collect();
        labels.extend(by_key.keys().cloned());
        labels.extend(std::mem::take(&mut self.published));
        for label in &labels {
            let value = by_key.get(label).copied().unwrap_or(0);
            metrics::gauge!("stored_secrets", "key" => label.clone()).set(value as f64);
        }
        self.published = labels;
    }

    /// Counts the stored secrets per key version (one aggregate query) and publishes them.
    pub async fn refresh(&mut self, db: &TenantDb, keyring: &KeyRing) -> AppResult<()> {
        let by_key = stored_secrets_by_key(db).await?;
        self.publish(keyring, &by_key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretString;

    use crate::crypto::test_keys::{NEW, OLD, OTHER};

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec, "ENCRYPTION_KEYS").unwrap()
    }

    /// A row with an API key and secret sealed by `sealer` (and optionally an access token by `token_sealer`).
    fn row(sealer: &KeyRing, token_sealer: Option<&KeyRing>) -> StoredRow {
        let (id, user_id) = (Uuid::new_v4(), Uuid::new_v4());
        let owner = SecretOwner {
            user_id,
            connection_id: id,
        };
        let seal = |ring: &KeyRing, field, value: &str| ring.seal(&owner, field, &SecretString::new(value)).unwrap();
        let api_key = seal(sealer, SecretField::ApiKey, "the-api-key");
        StoredRow {
            id,
            user_id,
            api_secret_encrypted: Some(seal(sealer, SecretField::ApiSecret, "the-api-secret").token),
            passphrase_encrypted: None,
            access_token_encrypted: token_sealer.map(|ring| seal(ring, SecretField::AccessToken, "the-session").token),
            key_version: Some(api_key.key_id),
            api_key_encrypted: Some(api_key.token),
        }
    }

    fn owner_of(row: &StoredRow) -> SecretOwner {
        SecretOwner {
            user_id: row.user_id,
            connection_id: row.id,
        }
    }

    #[test]
    fn reseals_what_an_old_key_sealed_and_only_that() {
        let (old, new) = (ring(OLD), ring(NEW));
        let rotated = ring(&format!("{NEW},{OLD}"));
        // API key and secret under the old key; the Kite session already under the new one.
        let stored = row(&old, Some(&new));
        let Plan::Write { resealed, from_keys } = plan(&rotated, &stored) else {
            panic!("expected a write")
        };
        let fields: Vec<_> = resealed.iter().map(|(field, _)| *field).collect();
        assert_eq!(fields, [SecretField::ApiKey, SecretField::ApiSecret]);
        assert_eq!(from_keys.into_iter().collect::<Vec<_>>(), [old.primary_key_id()]);
        for (field, token) in &resealed {
            let opened = new.open(&owner_of(&stored), *field, token).unwrap();
            let expected = if *field == SecretField::ApiKey {
                "the-api-key"
            } else {
                "the-api-secret"
            };
            assert_eq!(opened.expose(), expected);
            assert!(old.open(&owner_of(&stored), *field, token).is_err());
        }
    }

    #[test]
    fn an_old_session_token_under_a_current_version_is_found() {
        // The row records the primary, but its Kite session was sealed by a replica still on the old key.
        let rotated = ring(&format!("{NEW},{OLD}"));
        let stored = row(&ring(NEW), Some(&ring(OLD)));
        let Plan::Write { resealed, .. } = plan(&rotated, &stored) else {
            panic!("expected a write")
        };
        assert_eq!(resealed.len(), 1);
        assert_eq!(resealed[0].0, SecretField::AccessToken);
    }

    #[test]
    fn current_rows_are_left_alone_and_stale_versions_relabelled() {
        let new = ring(NEW);
        let stored = row(&new, Some(&new));
        assert!(matches!(plan(&new, &stored), Plan::Current));
        // Same key, recorded under another id (e.g. an explicit `v2:` id was added later).
        let renamed = ring(&format!("v2:{NEW}"));
        let Plan::Write { resealed, from_keys } = plan(&renamed, &stored) else {
            panic!("expected a relabel")
        };
        assert!(resealed.is_empty() && from_keys.is_empty());
        let unrecorded = StoredRow {
            key_version: None,
            ..row(&new, None)
        };
        assert!(matches!(plan(&new, &unrecorded), Plan::Write { resealed, .. } if resealed.is_empty()));
    }

    #[test]
    fn unreadable_secrets_name_the_field_and_reason_only() {
        let rotated = ring(&format!("{NEW},{OLD}"));
        let foreign = row(&ring(OTHER), None);
        let Plan::Unreadable { field, reason } = plan(&rotated, &foreign) else {
            panic!("expected unreadable")
        };
        assert_eq!((field, reason), (SecretField::ApiKey, CryptoError::NoKeyDecrypts));

        // A token copied from another row opens, but is not this row's.
        let mut copied = row(&ring(OLD), None);
        copied.api_secret_encrypted = row(&ring(OLD), None).api_secret_encrypted;
        let Plan::Unreadable { field, reason } = plan(&rotated, &copied) else {
            panic!("expected unreadable")
        };
        assert_eq!((field, reason), (SecretField::ApiSecret, CryptoError::OwnerMismatch));
        let shown = Unreadable {
            connection_id: copied.id,
            field,
            reason: CryptoError::OwnerMismatch,
        }
        .to_string();
        assert!(
            shown.contains(&copied.id.to_string()) && shown.contains("api_secret"),
            "{shown}"
        );
        assert!(
            !shown.contains(copied.api_secret_encrypted.as_deref().unwrap()),
            "{shown}"
        );
    }

    #[test]
    fn an_empty_token_is_unreadable_not_skipped() {
        let mut stored = row(&ring(NEW), None);
        stored.passphrase_encrypted = Some(String::new());
        assert_eq!(stored.secrets(), 3);
        assert!(matches!(
            plan(&ring(NEW), &stored),
            Plan::Unreadable {
                field: SecretField::Passphrase,
                reason: CryptoError::NoKeyDecrypts
            }
        ));
    }

    #[test]
    fn the_gauge_lists_ring_keys_and_drops_vanished_versions_to_zero() {
        let handle = crate::telemetry::metrics_handle();
        let (new, old) = (KeyRing::generate_key(), KeyRing::generate_key());
        let rotated = ring(&format!("{new},{old}"));
        let (new_id, old_id) = (
            ring(&new).primary_key_id().to_owned(),
            ring(&old).primary_key_id().to_owned(),
        );
        let gone = format!("gone-{}", Uuid::new_v4().simple());
        let value = |key: &str| {
            let prefix = format!("stored_secrets{{key=\"{key}\"}} ");
            handle
                .render()
                .lines()
                .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
        };
        let mut gauge = StoredSecretsGauge::default();
        gauge.publish(&rotated, &BTreeMap::from([(old_id.clone(), 7), (gone.clone(), 2)]));
        assert_eq!(value(&old_id).as_deref(), Some("7"));
        assert_eq!(
            value(&new_id).as_deref(),
            Some("0"),
            "a ring key holding nothing shows 0"
        );
        assert_eq!(value(&gone).as_deref(), Some("2"));
        // After a rekey: everything under the new key; the old one and the vanished version read 0.
        gauge.publish(&rotated, &BTreeMap::from([(new_id.clone(), 9)]));
        assert_eq!(value(&new_id).as_deref(), Some("9"));
        assert_eq!(value(&old_id).as_deref(), Some("0"));
        assert_eq!(value(&gone).as_deref(), Some("0"));
    }
}
