//! Integration tests: the real server on an ephemeral port, spoken to over
//! HTTP, with mock exchanges at the HTTP boundary.

mod binance_client;
mod mock;
