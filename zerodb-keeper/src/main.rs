//! zerodb-keeper: not built yet. It will decide datasource switches
//! (SPEC.md §3); until then it says so instead of pretending to run.

#![forbid(unsafe_code)]

fn main() {
    eprintln!(
        "zerodb-keeper: not implemented yet.\n\
         It will coordinate proxies and agents and decide datasource switches (SPEC.md §3).\n\
         usage (planned): zerodb-keeper --config FILE"
    );
    std::process::exit(2);
}
