//! What the process's PostgreSQL role may do, checked when `serve` and
//! `worker` start, so that row-level security (migration 000006) is known to
//! bind before the first request instead of being silently bypassed.
//!
//! Refused: a superuser or a `BYPASSRLS` role (policies never apply to them,
//! not even with `FORCE`), a role without `exchange_connections_app` (every
//! query would see no rows), and a process that must act as the system (the
//! health monitor, the session sweep) without `exchange_connections_worker`.
//! Warned about, at error level, but allowed: a role that owns the tables.
//! `FORCE` binds the owner to the policies, so no row leaks, but the owner can
//! also alter or disable them; refusing it would break single-role setups that
//! work correctly today, so it is left to the operator to see the warning.
//! The CLI tools that sweep every row need a role that sees them all.

use anyhow::Context as _;
use migration::{APP_ROLE, WORKER_ROLE};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

/// The connected role's standing, as PostgreSQL reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleStanding {
    pub name: String,
    pub superuser: bool,
    pub bypass_rls: bool,
    /// Owns (or inherits the owner of) a table in the current schema.
    pub owns_tables: bool,
    /// Has `exchange_connections_app`'s privileges: may act as users.
    pub acts_as_users: bool,
    /// Has `exchange_connections_worker`'s privileges: may act as the system.
    pub acts_as_system: bool,
}

/// Reads the standing of the role `db` connects as (PostgreSQL only).
pub async fn standing(db: &DatabaseConnection) -> anyhow::Result<RoleStanding> {
    // `pg_has_role` fails on a role that does not exist: test existence first.
    let holds = |role: &str| {
        format!(
            "CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') \
             THEN pg_has_role(current_user, '{role}', 'USAGE') ELSE false END"
        )
    };
    let sql = format!(
        "SELECT r.rolname AS name, r.rolsuper AS superuser, r.rolbypassrls AS bypass_rls, \
           EXISTS (SELECT 1 FROM pg_tables t WHERE t.schemaname = current_schema() \
                   AND pg_has_role(current_user, t.tableowner, 'USAGE')) AS owns_tables, \
           {} AS acts_as_users, {} AS acts_as_system \
         FROM pg_roles r WHERE r.rolname = current_user",
        holds(APP_ROLE),
        holds(WORKER_ROLE)
    );
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .context("reading the database role's privileges")?
        .context("the database role is not in pg_roles")?;
    Ok(RoleStanding {
        name: row.try_get("", "name")?,
        superuser: row.try_get("", "superuser")?,
        bypass_rls: row.try_get("", "bypass_rls")?,
        owns_tables: row.try_get("", "owns_tables")?,
        acts_as_users: row.try_get("", "acts_as_users")?,
        acts_as_system: row.try_get("", "acts_as_system")?,
    })
}

/// Refuses a role row-level security would not bind, or one that lacks the
/// identity the process needs. Returns whether it may act as the system.
/// SQLite has no roles: everything is allowed there.
pub async fn check(db: &DatabaseConnection, needs_system: bool) -> anyhow::Result<bool> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(true);
    }
    let role = standing(db).await?;
    judge(&role, needs_system)?;
    if role.owns_tables {
        tracing::error!(
            role = %role.name,
            "DATABASE_URL connects as the owner of the tables: row-level security binds it (FORCE), but it \
             can alter or drop the policies. Run serve and worker as a role granted {APP_ROLE} (or \
             {WORKER_ROLE}) that owns nothing; keep the owner for `migrate`."
        );
    }
    Ok(role.acts_as_system)
}

/// For the CLI tools that must see every user's rows (`rekey`, `audit
/// verify`): a role that would see only some of them is refused, since a
/// tool that silently skips rows could report "all done" or "all intact".
/// A superuser or BYPASSRLS role is fine here: it sees everything.
pub async fn check_sees_all(db: &DatabaseConnection) -> anyhow::Result<()> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    judge_sees_all(&standing(db).await?)
}

fn judge_sees_all(role: &RoleStanding) -> anyhow::Result<()> {
    if role.superuser || role.bypass_rls || role.acts_as_system {
        return Ok(());
    }
    anyhow::bail!(
        "DATABASE_URL connects as `{}`, which row-level security would show only part of the rows: \
         run this with the worker's role (granted {WORKER_ROLE}) or the schema's owner if it is a superuser.",
        role.name
    )
}

fn judge(role: &RoleStanding, needs_system: bool) -> anyhow::Result<()> {
    let name = &role.name;
    if role.superuser || role.bypass_rls {
        anyhow::bail!(
            "DATABASE_URL connects as `{name}`, a {} role: PostgreSQL never applies row-level security to it, \
             so one missed user filter could expose every user's keys. Connect as a role granted {} \
             (see the README, \"Database roles\"); keep `{name}` for `migrate`.",
            if role.superuser { "superuser" } else { "BYPASSRLS" },
            if needs_system { WORKER_ROLE } else { APP_ROLE },
        );
    }
    if !role.acts_as_users {
        anyhow::bail!(
            "DATABASE_URL connects as `{name}`, which is not granted {APP_ROLE}: row-level security would \
             hide every row from it. GRANT {} TO {name} (see the README, \"Database roles\"); \
             `exchange-connections migrate` creates the role.",
            if needs_system { WORKER_ROLE } else { APP_ROLE },
        );
    }
    if needs_system && !role.acts_as_system {
        anyhow::bail!(
            "DATABASE_URL connects as `{name}`, which is not granted {WORKER_ROLE}: the health monitor works \
             across users and needs it. GRANT {WORKER_ROLE} TO {name}, or give the worker its own login role \
             (see the README, \"Database roles\")."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role() -> RoleStanding {
        RoleStanding {
            name: "ec_api".into(),
            superuser: false,
            bypass_rls: false,
            owns_tables: false,
            acts_as_users: true,
            acts_as_system: false,
        }
    }

    #[test]
    fn refuses_roles_rls_would_not_bind_or_that_lack_their_identity() {
        assert!(judge(&role(), false).is_ok());
        let message = |r: &RoleStanding, system: bool| judge(r, system).unwrap_err().to_string();
        let superuser = RoleStanding {
            superuser: true,
            acts_as_system: true,
            ..role()
        };
        assert!(message(&superuser, false).contains("superuser"));
        let bypass = RoleStanding {
            bypass_rls: true,
            ..role()
        };
        assert!(message(&bypass, false).contains("BYPASSRLS"));
        let stranger = RoleStanding {
            acts_as_users: false,
            ..role()
        };
        assert!(message(&stranger, false).contains(APP_ROLE));
        assert!(
            message(&role(), true).contains(WORKER_ROLE),
            "the API role cannot run the worker"
        );
        let worker = RoleStanding {
            acts_as_system: true,
            ..role()
        };
        assert!(judge(&worker, true).is_ok());
        // An owner is bound by FORCE: warned about, not refused.
        let owner = RoleStanding {
            owns_tables: true,
            ..role()
        };
        assert!(judge(&owner, false).is_ok());
    }

    #[test]
    fn tools_need_a_role_that_sees_every_row() {
        assert!(judge_sees_all(&role()).unwrap_err().to_string().contains(WORKER_ROLE));
        for sees_all in [
            RoleStanding {
                acts_as_system: true,
                ..role()
            },
            RoleStanding {
                superuser: true,
                ..role()
            },
            RoleStanding {
                bypass_rls: true,
                ..role()
            },
        ] {
            assert!(judge_sees_all(&sees_all).is_ok(), "{sees_all:?}");
        }
    }
}
