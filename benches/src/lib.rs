//! See benches/proxy_vs_haproxy.rs.
