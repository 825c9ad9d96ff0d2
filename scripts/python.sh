# Sourced by the shell scripts (needs $root, the repository root): sets PY, the Python they run.
#   PY=/path/to/python bash scripts/demo.sh     any interpreter with the requirements: a conda env, a
#                                               cluster module, a venv elsewhere (pip install -r requirements.txt)
# Without PY: the checkout's .venv (bash scripts/setup_env.sh makes it), else python3 from PATH, with a note.
if [ -z "${PY:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then
        PY="$root/.venv/bin/python"
    else
        PY=python3
        echo "note: no .venv in $root: using $(command -v python3 || echo python3); set PY=/path/to/python to" \
             "choose, or run bash scripts/setup_env.sh" >&2
    fi
fi
export PY  # scripts called from this one (getdata.sh) use the same interpreter

# require_modules MODULE...: one clear line (exit 2) instead of a ModuleNotFoundError traceback later.
require_modules() {
    local missing
    missing=$("$PY" -c '
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' "$@" 2>/dev/null) || {
        echo "error: PY=$PY does not run: set PY=/path/to/python, or run bash scripts/setup_env.sh" >&2
        exit 2
    }
    if [ -n "$missing" ]; then
        echo "error: $PY lacks $missing: run bash scripts/setup_env.sh (makes .venv), or set PY= to a python" \
             "with the requirements (pip install -r requirements.txt)" >&2
        exit 2
    fi
}

# command_line WORD...: the words as one command line, each quoted only where the shell needs it (what
# the scripts export as INFINI_RESULTS_VIA: the command that reproduces their results records).
command_line() {
    local out="" w q="'"
    for w in "$@"; do
        if [[ $w =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then
            out+=" $w"
        else
            out+=" $q${w//$q/$q\\$q$q}$q"
        fi
    done
    echo "${out# }"
}
