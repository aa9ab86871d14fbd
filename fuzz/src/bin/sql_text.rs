//! AFL++ target: `zerodb_proxy::fuzz::sql_text`.
fn main() {
    afl::fuzz!(|data: &[u8]| zerodb_proxy::fuzz::sql_text(data));
}
