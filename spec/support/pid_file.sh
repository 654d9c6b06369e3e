# shellcheck shell=sh
# Pid files of the servers a spec run starts (sourced by spec/run.sh, and
# by scripts a spec writes): "PID START" in $FILEAPI_RUN_DIR/NAME.pid.  The
# process is the run's only while it has that start time (/proc/PID/stat's
# field 22, read after the last ") ": a name may hold one): ids come round
# on a busy machine, and another's process must be left alone.  The Lua
# side writes the same (helper.remember_pid, fileapi.mock.proc.start_time).
started_at() {
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # shellcheck disable=SC2086
    set -- ${stat##*) }
    eval "echo \${20}"
}

# remember_pid NAME PID
remember_pid() {
    since=$(started_at "$2") || return 0
    echo "$2 $since" >"$FILEAPI_RUN_DIR/$1.pid"
}
