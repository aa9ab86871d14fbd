//! zerodb-agent: not built yet. It will report on and promote/fence the
//! MySQL server beside it (SPEC.md §3, §5); until then it says so.

#![forbid(unsafe_code)]

fn main() {
    eprintln!(
        "zerodb-agent: not implemented yet.\n\
         It will report liveness, load and binlog position of its datasource and promote or fence it on the keeper's order.\n\
         usage (planned): zerodb-agent --config FILE"
    );
    std::process::exit(2);
}
