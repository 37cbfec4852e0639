//! The client's address: the TCP peer, or, behind trusted proxies (a load
//! balancer, an ingress), the address they recorded in `X-Forwarded-For`.
//! Only the last `hops` entries were written by proxies we trust; anything
//! further left was sent by the client and could be forged.

use axum::http::HeaderMap;
use std::net::{IpAddr, SocketAddr};

pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted_hops: usize) -> IpAddr {
    if trusted_hops == 0 {
        return peer.ip();
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // With N trusted proxies, the client is the N-th address from the right.
    forwarded
        .len()
        .checked_sub(trusted_hops)
        .and_then(|i| forwarded.get(i))
        .and_then(|ip| ip.parse().ok())
        .unwrap_or(peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // No trusted proxy: the header is the client's word, ignored.
        assert_eq!(client_ip(peer, &headers(&["1.2.3.4"]), 0), ip("10.0.0.9"));
        // One proxy: it appended the client's address last.
        assert_eq!(client_ip(peer, &headers(&["6.6.6.6, 1.2.3.4"]), 1), ip("1.2.3.4"));
        assert_eq!(
            client_ip(peer, &headers(&["6.6.6.6", "1.2.3.4, 10.0.0.2"]), 2),
            ip("1.2.3.4")
        );
        // Missing or garbage: the peer.
        assert_eq!(client_ip(peer, &headers(&[]), 1), ip("10.0.0.9"));
        assert_eq!(client_ip(peer, &headers(&["nonsense"]), 1), ip("10.0.0.9"));
        assert_eq!(client_ip(peer, &headers(&["1.2.3.4"]), 2), ip("10.0.0.9"));
    }
}
