# shellcheck shell=bash
# Sourced by the shell scripts that start servers: `at_exit COMMAND` runs COMMAND when the
# script ends, normally, on an error (set -e) or on Ctrl-C/SIGTERM. Commands run newest first,
# so that servers stop before the databases they use. One EXIT trap for all: a second
# `trap … EXIT` elsewhere would silently replace the first and leave its server running.
[ -n "${at_exit_loaded:-}" ] && return 0
at_exit_loaded=1
at_exit_commands=()

at_exit() {
  at_exit_commands+=("$1")
}

run_at_exit() {
  local i
  for ((i = ${#at_exit_commands[@]} - 1; i >= 0; i--)); do
    eval "${at_exit_commands[i]}" || true
  done
  at_exit_commands=()
}

trap run_at_exit EXIT
# Without these the shell would die of the signal without running its EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM
