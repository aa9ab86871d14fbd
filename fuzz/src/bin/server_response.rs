//! AFL++ target: `zerodb_proxy::fuzz::server_response`.
fn main() {
    afl::fuzz!(|data: &[u8]| zerodb_proxy::fuzz::server_response(data));
}
