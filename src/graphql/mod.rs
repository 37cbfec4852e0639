//! The GraphQL schema: types, thin resolvers, error mapping. Resolvers
//! parse input, find the caller and call the service layer; nothing else.

mod context;
mod exchanges;
mod limits;
mod mutation;
mod query;
mod subscription;

pub use context::GraphqlContext;

use crate::service::Services;
use async_graphql::{Schema, SchemaBuilder};
use subscription::SubscriptionRoot;

pub type AppSchema = Schema<query::QueryRoot, mutation::MutationRoot, SubscriptionRoot>;

/// Query depth limit: deep enough for GraphiQL's introspection query (13).
pub const MAX_DEPTH: usize = 16;
pub const MAX_COMPLEXITY: usize = 1000;

fn builder() -> SchemaBuilder<query::QueryRoot, mutation::MutationRoot, SubscriptionRoot> {
    Schema::build(query::QueryRoot, mutation::MutationRoot, SubscriptionRoot)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
}

/// The schema with the services attached; introspection only when allowed.
pub fn build_schema(services: Services, introspection: bool) -> AppSchema {
    let builder = builder().data(services).extension(limits::AliasLimit);
    if introspection {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

/// The schema without services, with or without the abuse limits (depth,
/// complexity, aliases), for `benches/limits.rs`, which measures what the
/// limits cost per request. Resolvers that need the services fail.
#[doc(hidden)]
pub fn bare_schema(limited: bool) -> AppSchema {
    if limited {
        builder().extension(limits::AliasLimit).finish()
    } else {
        Schema::build(query::QueryRoot, mutation::MutationRoot, SubscriptionRoot).finish()
    }
}

/// The SDL that `schema.graphql` holds (`exchange-connections schema`).
pub fn sdl() -> String {
    builder().finish().sdl_with_options(
        async_graphql::SDLExportOptions::new()
            .sorted_fields()
            .sorted_arguments()
            .sorted_enum_items(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_graphql_is_up_to_date() {
        let sdl = super::sdl();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &sdl).expect("write schema.graphql");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == sdl,
            "schema.graphql is stale: run `UPDATE_SCHEMA=1 cargo test schema_graphql`"
        );
    }
}
