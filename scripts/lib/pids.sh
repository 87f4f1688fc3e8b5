# Sourced by the scripts that start services: a process is recorded only by the script that started it,
# with the kernel's start time of that process, so scripts/stop.sh signals it only while that PID is
# still the same process (a PID reused after a reboot or a crash is left alone).

# record_pid NAME PID: .local/run/NAME.pid holds "PID STARTTIME".
record_pid() {
  local name=$1 pid=$2 run_dir started
  run_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.local/run"
  mkdir -p "$run_dir"
  started=$(process_start "$pid") || started=""
  printf '%s %s\n' "$pid" "$started" >"$run_dir/$name.pid"
}

# process_start PID: the process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
process_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # The command name (field 2) may hold spaces: count fields after its closing parenthesis.
  stat=${stat##*) }
  set -- $stat
  printf '%s\n' "${20}"
}
