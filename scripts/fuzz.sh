#!/usr/bin/env bash
# Fuzzing the decoders that read network bytes (zerodb_proxy::fuzz) with
# AFL++ through cargo-afl.
#
#   scripts/fuzz.sh seeds          capture seeds from real clients and a real
#                                  MariaDB, minimise them into fuzz/corpus/
#   scripts/fuzz.sh run [SECONDS]  fuzz the four targets at once (default
#                                  3600 s each), then report, keep crashes in
#                                  fuzz/regressions/ and grow fuzz/corpus/
#
# Needs: cargo install cargo-afl (AFL++ is built on first use). The
# ordinary tests replay fuzz/corpus and fuzz/regressions (tests/fuzz_corpus.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGETS=(client_stream server_response sql_text handshake)
export AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_NO_UI=1

build() {
    (cd fuzz && cargo afl build --release)
    AFL_BIN=$(dirname "$(find ~/.local/share/afl.rs -path '*/afl/bin/afl-cmin.bash' | sort | tail -1)")
}

dict_for() {
    [[ $1 == sql_text || $1 == client_stream ]] && echo "-x $ROOT/fuzz/dict/sql.dict"
}

# Minimises $2.. (directories) into fuzz/corpus/$1 by the coverage of target $1.
minimise() {
    local t=$1; shift
    local all; all=$(mktemp -d)
    local i=0
    for d in "$@"; do
        [[ -d $d ]] || continue
        for f in "$d"/*; do
            [[ -f $f ]] && cp "$f" "$all/$((i++))"
        done
    done
    local min; min=$(mktemp -d)
    rmdir "$min"
    # The bash afl-cmin: the Python one cargo-afl runs finds no coverage
    # in Rust targets (AFL++ 4.40c).
    AFL_PATH=$AFL_BIN "$AFL_BIN/afl-cmin.bash" -i "$all" -o "$min" -- "fuzz/target/release/$t" \
        >/dev/null 2>&1
    rm -rf "fuzz/corpus/$t"
    mkdir -p "fuzz/corpus/$t"
    for f in "$min"/*; do
        cp "$f" "fuzz/corpus/$t/$(sha1sum "$f" | cut -c1-16)"
    done
    echo "$t: $i inputs minimised to $(ls "fuzz/corpus/$t" | wc -l)"
    rm -rf "$all" "$min"
}

case "${1:-}" in
seeds)
    build
    rm -rf fuzz/seeds
    ZERODB_SEEDS_OUT="$ROOT/fuzz/seeds" cargo test -p zerodb-proxy --test fuzz_corpus \
        -- --ignored capture_seed_corpus --nocapture
    for t in "${TARGETS[@]}"; do
        minimise "$t" "fuzz/seeds/$t" "fuzz/corpus/$t"
    done
    ;;
run)
    secs=${2:-3600}
    build
    rm -rf fuzz/out
    mkdir -p fuzz/out
    pids=()
    for t in "${TARGETS[@]}"; do
        # shellcheck disable=SC2046
        nice -n 19 cargo afl fuzz -V "$secs" -i "fuzz/corpus/$t" -o "fuzz/out/$t" \
            $(dict_for "$t") -- "fuzz/target/release/$t" >"fuzz/out/$t.log" 2>&1 &
        pids+=($!)
    done
    status=0
    for p in "${pids[@]}"; do wait "$p" || status=1; done
    printf '%-16s %12s %10s %8s %8s %8s\n' target execs execs/s corpus crashes hangs
    for t in "${TARGETS[@]}"; do
        s=fuzz/out/$t/default/fuzzer_stats
        if [[ ! -f $s ]]; then
            echo "$t: no stats (see fuzz/out/$t.log)"; status=1; continue
        fi
        get() { awk -F: -v k="$1" '$1 ~ "^"k" *$" {gsub(/ /, "", $2); print $2}' "$s"; }
        printf '%-16s %12s %10s %8s %8s %8s\n' "$t" "$(get execs_done)" "$(get execs_per_sec)" \
            "$(get corpus_count)" "$(get saved_crashes)" "$(get saved_hangs)"
        for c in fuzz/out/$t/default/crashes/id:*; do
            [[ -f $c ]] || continue
            mkdir -p "fuzz/regressions/$t"
            cp "$c" "fuzz/regressions/$t/$(sha1sum "$c" | cut -c1-16)"
            echo "$t: crash kept as fuzz/regressions/$t/$(sha1sum "$c" | cut -c1-16)"
            status=1
        done
    done
    for t in "${TARGETS[@]}"; do
        minimise "$t" "fuzz/corpus/$t" "fuzz/out/$t/default/queue"
    done
    exit $status
    ;;
*)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
