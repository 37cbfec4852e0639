//! Mock exchanges: local HTTP servers that check signatures exactly as each
//! exchange documents them and answer with the exchange's real error bodies.

#![allow(dead_code)]

pub mod binance;
pub mod coinbase;
pub mod kite;
pub mod kraken;
