#!/usr/bin/env bash
# Structure checks that `cargo test` cannot make, run by scripts/test.sh:
#
# 1. No module cycle in any library crate: the module-level "uses" graph
#    that cargo-modules prints (types, functions and traits lifted to the
#    module that defines them) has no cycle. (`cargo modules dependencies
#    --acyclic` itself checks the item-level graph, where every type and
#    a method of it that mentions the type form a cycle, so it cannot pass
#    for any crate with methods.)
# 2. No public function of a library crate returns `Result<_, String>` or
#    `Result<_, ()>`: errors are typed.
#
# Installs cargo-modules from crates.io if it is missing (a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
CRATES=(zerodb-core zerodb-proxy zerodb-keeper zerodb-agent)
MODULES_VERSION=0.27.0 # the newest that builds with Rust 1.95

if ! cargo modules --version 2>/dev/null | grep -q "$MODULES_VERSION"; then
  echo "installing cargo-modules $MODULES_VERSION"
  cargo install --locked --quiet cargo-modules --version "$MODULES_VERSION"
fi

status=0
for crate in "${CRATES[@]}"; do
  graph=$(cargo modules dependencies --lib -p "$crate" --all-features \
    --no-fns --no-types --no-traits --no-externs --no-sysroot --layout dot 2>/dev/null)
  if ! python3 scripts/module_cycles.py "$crate" <<<"$graph"; then
    status=1
  fi
done

python3 - "${CRATES[@]}" <<'PY' || status=1
import pathlib, re, sys
bad = []
for crate in sys.argv[1:]:
    for path in sorted(pathlib.Path(crate, "src").rglob("*.rs")):
        if path.name == "main.rs":
            continue
        text = path.read_text()
        # Each public fn's signature, from `pub fn` to its body or `;`.
        for m in re.finditer(r"\bpub (?:async )?fn\b[^{;]*", text):
            sig = " ".join(m.group(0).split())
            if re.search(r"Result<.*,\s*(String|\(\))\s*>\s*$", sig):
                line = text.count("\n", 0, m.start()) + 1
                bad.append(f"{path}:{line}: {sig}")
if bad:
    print("public functions with untyped errors:")
    print("\n".join(bad))
    sys.exit(1)
print("no public function returns Result<_, String> or Result<_, ()>")
PY
exit $status
