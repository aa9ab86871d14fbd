//! AFL++ target: `zerodb_proxy::fuzz::handshake`.
fn main() {
    afl::fuzz!(|data: &[u8]| zerodb_proxy::fuzz::handshake(data));
}
