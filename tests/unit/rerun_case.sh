# shellcheck shell=bash disable=SC2034 # bad is the sourcing test's exit status
# Sourced by tests/unit/test_*_rerun.sh: runs one `tests/run SUITE` with a
# made-up runner standing in for a test host script, and checks its last
# line and how often the runner was called. Sourcing it makes $work, a
# scratch directory removed at exit, and bad=0; a mismatch sets bad=1.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bad=0

# rerun_case PREFIX RUNNER-VAR SUITE NAME WANT-LAST-LINE WANT-CALLS SPEC...
#   SPEC N is what the runner prints and returns on its Nth call
#   ("STATUS|LINES", LINES with \n escapes).
rerun_case() {
	local prefix=$1 var=$2 suite=$3 name=$4 want=$5 calls=$6 out got n i=1
	shift 6
	rm -f "$work/calls" "$work"/spec.*
	for spec in "$@"; do
		printf '%s' "$spec" >"$work/spec.$i"
		i=$((i + 1))
	done
	cat >"$work/runner" <<RUNNER
#!/usr/bin/env bash
echo x >>"$work/calls"
n=\$(wc -l <"$work/calls")
spec=\$(cat "$work/spec.\$n" 2>/dev/null || echo '9|runner called too often')
printf '%b\n' "\${spec#*|}"
exit "\${spec%%|*}"
RUNNER
	chmod +x "$work/runner"
	out=$(env "$var=$work/runner" tests/run "$suite" 2>&1)
	got=$(tail -n1 <<<"$out")
	n=$(wc -l <"$work/calls" 2>/dev/null || echo 0)
	if [ "$got" = "$want" ] && [ "$n" = "$calls" ]; then
		echo "PASS: ${prefix}_$name"
	else
		echo "FAIL: ${prefix}_$name (last line '$got', expected '$want'; runner called $n times, expected $calls)"
		sed 's/^/    /' <<<"$out"
		bad=1
	fi
}
