#!/usr/bin/env bash
# Whole-process measurements of splicing from remote parents, against a local nginx on
# 127.0.0.1 (started here, stopped on exit), reported as ratios measured in the same run:
#
#   bash benches/remote.sh [WORKDIR] [SMALL_LAYERS] [CONNECTIONS]
#
# 1. bytes fetched (the splice's --json summary, all parents, headers included) / tensor
#    bytes the child takes from the remote parents (its --dry-run --json plan);
# 2. wall time of the splice (hf:// parents, R1T recipe, output written and fsynced)
#    against curl fetching the same byte ranges (contiguous pieces merged, as the splice
#    merges them) from the same nginx with as many parallel transfers: into files followed
#    by `sync` (the same disk work), and into /dev/null (the network alone);
# 3. peak RSS of the splice (GNU time -v), which must not grow with the model.
# Filled synthetic parents (examples/synth --small SMALL_LAYERS, default 6: about 1 GB
# each), warm in the page cache for both sides. 5 rounds in alternating order, medians.
# Needs nginx (apt-get install nginx-light), curl, GNU time and python3.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d)}"
LAYERS="${2:-6}"
CONN="${3:-4}"
mkdir -p "$WORK/www/org/repo" "$WORK/nginx/tmp"
WORK="$(cd "$WORK" && pwd)"
cd "$REPO"
NGINX="${GGUF_SPLICE_NGINX:-$(PATH="$PATH:/usr/sbin" command -v nginx || true)}"
TIME=/usr/bin/time
for need in "$NGINX" curl python3 "$TIME"; do
    command -v "$need" >/dev/null || { echo "missing $need (apt-get install nginx-light curl time)" >&2; exit 1; }
done
cargo build --release --quiet --bin gguf-splice --example synth
BIN="$REPO/target/release/gguf-splice"
SYNTH="$REPO/target/release/examples/synth"

echo "== filled synthetic parents, $LAYERS layers, in $WORK/www/org/repo"
"$SYNTH" "$WORK/www/org/repo/v3.gguf" --seed 1 --small "$LAYERS" --fill
"$SYNTH" "$WORK/www/org/repo/r1.gguf" --seed 2 --small "$LAYERS" --fill

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
master_process off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp;
    proxy_temp_path $WORK/nginx/tmp;
    fastcgi_temp_path $WORK/nginx/tmp;
    uwsgi_temp_path $WORK/nginx/tmp;
    scgi_temp_path $WORK/nginx/tmp;
    server {
        listen 127.0.0.1:$PORT;
        absolute_redirect off;
        location ~ ^/([^/]+)/([^/]+)/resolve/main/(.*)\$ { return 302 /cdn/\$1/\$2/\$3; }
        location /cdn/ { alias $WORK/www/; }
    }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
NGINX_PID=$!
trap 'kill $NGINX_PID 2>/dev/null; wait $NGINX_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.05; done
export HF_ENDPOINT="http://127.0.0.1:$PORT"
RECIPE=mappings/deepseek-r1t-chimera.toml
PARENTS=(--parent v3=hf://org/repo/v3.gguf --parent r1=hf://org/repo/r1.gguf)

# The ranges the child takes, merged where contiguous in the parent and the child, as curl
# requests: one "url / range / output" block per range.
rm -f "$WORK/child.gguf"
"$BIN" splice "${PARENTS[@]}" --recipe "$RECIPE" -o "$WORK/child.gguf" --dry-run --json > "$WORK/plan.json"
TAKEN=$(python3 - "$WORK/plan.json" "$HF_ENDPOINT" "$WORK" <<'PY'
import json, sys
plan, endpoint, work = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
runs = []
for t in plan["tensors"]:
    dest = t["offset"]
    for s in t["sources"]:
        key = (s["parent"], s["parent_shard"])
        if runs and runs[-1][0] == key and runs[-1][1] + runs[-1][3] == s["src_offset"] and runs[-1][2] + runs[-1][3] == dest:
            runs[-1][3] += s["bytes"]
        else:
            runs.append([key, s["src_offset"], dest, s["bytes"]])
        dest += s["bytes"]
for name, out in [("ranges-null.cfg", lambda i: "/dev/null"), ("ranges-file.cfg", lambda i: f"{work}/curl/r{i}.bin")]:
    with open(f"{work}/{name}", "w") as f:
        f.write("next\n".join(
            f'url = "{endpoint}/cdn/org/repo/{parent}.gguf"\nrange = "{src}-{src + n - 1}"\noutput = "{out(i)}"\n'
            for i, ((parent, _), src, _, n) in enumerate(runs)))
print(sum(r[3] for r in runs), len(runs))
PY
)
echo "child takes ${TAKEN% *} tensor bytes from the remote parents, in ${TAKEN#* } contiguous ranges"

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b <= 0) b = 0.01; printf "%.3f", a / b }'; }
sp_t=(); sp_rss=(); cu_t=(); cf_t=(); fetched=0
run_splice() {
    rm -f "$WORK/child.gguf"; sync
    "$TIME" -v -o "$WORK/time.txt" "$BIN" splice "${PARENTS[@]}" --recipe "$RECIPE" \
        -o "$WORK/child.gguf" -q --json --connections "$CONN" > "$WORK/summary.json"
    sp_t+=("$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; print s}' "$WORK/time.txt")")
    sp_rss+=("$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")")
    fetched=$(python3 -c 'import json,sys; print(sum(f["bytes"] for f in json.load(open(sys.argv[1]))["fetched"]))' "$WORK/summary.json")
}
run_curl() {
    rm -rf "$WORK/curl"; mkdir "$WORK/curl"; sync
    cf_t+=("$("$TIME" -f "%e" sh -c "curl -s -Z --parallel-max $CONN -K '$WORK/ranges-file.cfg' && sync" 2>&1 | tail -n 1)")
    cu_t+=("$("$TIME" -f "%e" curl -s -Z --parallel-max "$CONN" -K "$WORK/ranges-null.cfg" 2>&1 | tail -n 1)")
}
for round in 1 2 3 4 5; do
    if (( round % 2 )); then run_splice; run_curl; else run_curl; run_splice; fi
done
sp=$(median "${sp_t[@]}"); cu=$(median "${cu_t[@]}"); cf=$(median "${cf_t[@]}")
rss=$(printf '%s\n' "${sp_rss[@]}" | sort -g | tail -n 1)
echo "bytes fetched:          $fetched (headers included)"
echo "fetched / taken:        $(ratio "$fetched" "${TAKEN% *}")"
echo "splice (hf:// parents): $sp s (median of 5: ${sp_t[*]}), ${CONN} connections, output fsynced"
echo "curl, same ranges:      $cf s (median of 5: ${cf_t[*]}), ${CONN} parallel, into files + sync"
echo "curl, same ranges:      $cu s (median of 5: ${cu_t[*]}), ${CONN} parallel, to /dev/null"
echo "ratio (splice / curl):  time $(ratio "$sp" "$cf") (curl into files + sync), $(ratio "$sp" "$cu") (curl to /dev/null)"
echo "peak RSS of the splice: $rss KB (max of 5)"
rm -rf "$WORK/www/org/repo/v3.gguf" "$WORK/www/org/repo/r1.gguf" "$WORK/child.gguf" "$WORK/curl"
