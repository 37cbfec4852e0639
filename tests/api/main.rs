//! Integration tests: the real server on an ephemeral port, spoken to over
//! HTTP, with mock exchanges at the HTTP boundary, on SQLite and PostgreSQL.

mod bad_input;
mod binance_client;
mod coinbase_client;
mod connections;
mod embedded;
mod helpers;
mod http;
mod kite_client;
mod kite_login;
mod kraken_client;
mod mock;
mod policy;
mod resilience;
mod shared_budgets;
