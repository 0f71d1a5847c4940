#!/usr/bin/env bash
# The README's two commands as a new user runs them: a clean clone of this repository's HEAD and a new virtual
# environment in a temp folder, nothing cached (own RSDEMO_CACHE and HOME-level caches). Command 1 runs until the
# page answers (then it is stopped), command 2 runs the test suite; both wall times are printed, the folder removed.
#
#   scripts/fresh_check.sh            both commands
#   scripts/fresh_check.sh --app      command 1 only (install + the page answers)
#
# The real data: ../shared beside the clone is a link to the one beside this checkout when there is one (the UCM
# and data-format tests use it); without it those tests skip, as they do for any user without the data.
# PYTHON picks the interpreter (default python3.11, else python3); PORT the page's port (default: a free one).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$(command -v python3.11 || command -v python3)}
only_app=0
[[ "${1:-}" == "--app" ]] && only_app=1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsdemo-fresh.XXXXXX")
app_pid=""
cleanup() {
    if [[ -n "$app_pid" ]] && kill -0 "$app_pid" 2>/dev/null; then
        kill "$app_pid" 2>/dev/null || true
        wait "$app_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
secs() { local ms=$(( ($2 - $1) / 1000000 )); printf '%d.%d' $((ms / 1000)) $(((ms % 1000) / 100)); }

git clone --quiet --no-hardlinks "$here" "$tmp/rsdemo"
if [[ -d "$here/../shared" ]]; then
    ln -s "$(cd "$here/../shared" && pwd)" "$tmp/shared"
    echo "fresh_check: ../shared linked beside the clone (real-data tests run)"
else
    echo "fresh_check: no ../shared beside $here: real-data tests will skip"
fi
"$py" -m venv "$tmp/venv"
# a new user: own venv first on PATH, no rsdemo cache, no pip cache
export PATH="$tmp/venv/bin:$PATH" RSDEMO_CACHE="$tmp/cache" PIP_NO_CACHE_DIR=1 GRADIO_ANALYTICS_ENABLED=False
unset VIRTUAL_ENV PYTHONPATH
port=${PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
cd "$tmp/rsdemo"
echo "fresh_check: clone of $(git rev-parse --short HEAD) in $tmp, $(python --version), port $port"

# ---- README command 1: python -m pip install -r requirements.txt && python app.py ----------------------------
t0=$(date +%s%N)
python -m pip install --quiet -r requirements.txt > "$tmp/pip1.log" 2>&1 || { tail -30 "$tmp/pip1.log"; exit 1; }
t_install=$(date +%s%N)
GRADIO_SERVER_PORT=$port python app.py > "$tmp/app.log" 2>&1 &
app_pid=$!
ready=0
for _ in $(seq 1 600); do            # up to 10 minutes for the first start (it builds the demo gallery's index)
    if curl -fs -o /dev/null "http://127.0.0.1:$port/"; then ready=1; break; fi
    kill -0 "$app_pid" 2>/dev/null || break
    sleep 1
done
t_ready=$(date +%s%N)
kill "$app_pid" 2>/dev/null || true
wait "$app_pid" 2>/dev/null || true
app_pid=""
if [[ $ready != 1 ]]; then
    echo "fresh_check: FAILED: the page did not answer on port $port"; tail -30 "$tmp/app.log"; exit 1
fi
echo "fresh_check: command 1: install $(secs "$t0" "$t_install") s, page answered $(secs "$t_install" "$t_ready") s" \
     "after start ($(secs "$t0" "$t_ready") s in all)"
grep -m1 "page ready" "$tmp/app.log" || true
[[ $only_app == 1 ]] && exit 0

# ---- README command 2: python -m pip install -r requirements-dev.txt && python -m pytest ----------------------
t0=$(date +%s%N)
python -m pip install --quiet -r requirements-dev.txt > "$tmp/pip2.log" 2>&1 || { tail -30 "$tmp/pip2.log"; exit 1; }
t_install=$(date +%s%N)
set +e
python -m pytest 2>&1 | tee "$tmp/pytest.log" | tail -25
rc=${PIPESTATUS[0]}
set -e
t_end=$(date +%s%N)
echo "fresh_check: command 2: install $(secs "$t0" "$t_install") s, tests $(secs "$t_install" "$t_end") s" \
     "($(secs "$t0" "$t_end") s in all, exit $rc)"
exit "$rc"
