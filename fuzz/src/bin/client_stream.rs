//! AFL++ target: `zerodb_proxy::fuzz::client_stream`.
fn main() {
    afl::fuzz!(|data: &[u8]| zerodb_proxy::fuzz::client_stream(data));
}
