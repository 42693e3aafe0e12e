# Sourced by the scripts that build a virtualenv apart from the service's .venv (flink_venv.sh,
# airflow_venv.sh): side_venv_lock VENV, then side_venv_install VENV REQUIREMENTS [CONSTRAINTS].
# Idempotent: the install returns at once when VENV's stamp is newer than the requirement files.

side_venv_lock() {  # one install at a time (make test starts one in the background; the test fixture waits)
  mkdir -p "$(dirname "$1")"
  exec 9>"$1.lock"
  flock 9
}

side_venv_install() {
  local venv=$1 req=$2 con=${3:-} python=${PYTHON:-python3.11}
  command -v "$python" >/dev/null 2>&1 || python=python3
  if [[ -f "$venv/.installed" && ! "$req" -nt "$venv/.installed" && ( -z "$con" || ! "$con" -nt "$venv/.installed" ) ]]; then
    return 0
  fi
  echo "installing $req into $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$req" ${con:+-c "$con"}
  touch "$venv/.installed"
}
