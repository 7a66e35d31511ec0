# Sourced by the setup scripts: say what is happening and for how long, and show what pip downloads.
#   step TEXT        -> "[setup 12s] TEXT" (seconds since setup began)
#   pip_install ARGS -> PIP install ARGS, printing each download (name and size) as it starts; on failure the whole
#                       pip output (it is kept in a temporary log until then)
PIP=${PIP:-pip}
: "${SETUP_START:=$(date +%s)}"  # one clock for setup.sh and the scripts it runs
export SETUP_START
step() { echo "[setup $(( $(date +%s) - SETUP_START ))s] $*"; }
pip_install() {
  local log rc
  log=$(mktemp)
  "$PIP" install --progress-bar off "$@" 2>&1 | tee "$log" | awk '/^ *Downloading / {sub(/^ */, ""); print "    " $0; fflush()}'
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "pip install $* failed (exit $rc):"; tail -n 40 "$log"; }
  rm -f "$log"
  return "$rc"
}
