//! Per-request data the HTTP layer puts into every GraphQL request: the
//! verified caller (if any) and where the request came from.

use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::service::{RequestContext, Services};
use async_graphql::Context;

#[derive(Debug, Clone, Default)]
pub struct GraphqlContext {
    pub principal: Option<Principal>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// The services and the authenticated caller's request context, or `UNAUTHENTICATED`.
pub(super) async fn caller<'a>(ctx: &Context<'a>) -> AppResult<(&'a Services, RequestContext)> {
    let services = ctx
        .data::<Services>()
        .map_err(|_| AppError::internal(anyhow::anyhow!("services missing")))?;
    let request = ctx.data_opt::<GraphqlContext>().cloned().unwrap_or_default();
    let principal = request.principal.ok_or(AppError::Unauthenticated)?;
    services.users.ensure(&services.db, &principal).await?;
    Ok((
        services,
        RequestContext {
            principal,
            request_id: request.request_id,
            ip: request.ip,
            user_agent: request.user_agent,
            system_actor: None,
        },
    ))
}
