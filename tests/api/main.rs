//! Integration tests: the real server on an ephemeral port, spoken to over
//! HTTP, with mock exchanges at the HTTP boundary, on SQLite and PostgreSQL.

mod abuse;
mod alerts;
mod audit_chain;
mod bad_input;
mod binance_client;
mod canary;
mod coinbase_client;
mod connections;
mod embedded;
mod every_exchange;
mod graphql_ws_client;
mod helpers;
mod http;
mod kite_client;
mod kite_login;
mod kraken_client;
mod mock;
mod policy;
mod processes;
mod properties;
mod redis_hub;
mod rekey;
mod resilience;
mod rls;
mod shared_budgets;
mod subscriptions;
mod tcp_proxy;
mod worker;
mod ws_client;
