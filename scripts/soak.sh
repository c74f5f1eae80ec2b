#!/usr/bin/env bash
# Runs the process-kill tests (child processes killed with SIGKILL at random points) with many iterations, on SQLite
# and, when PATTERNS_POSTGRES is set, on PostgreSQL, round after round with a new seed each time.
#
# Usage: scripts/soak.sh [iterations per case] [rounds]
#   iterations  PATTERNS_KILL_ITERATIONS for each case (default 200; CI runs 20)
#   rounds      how many times to run the tests, each with a new seed (default 1)
# Environment:
#   PATTERNS_POSTGRES   the PostgreSQL server (the PostgreSQL cases are skipped without it)
#   PATTERNS_KILL_SEED  replays one seed (printed in every failure message) instead of a new one per round
#   CONFIGURATION       Debug (default) or Release
# Stops at the first failing round; the failure message names the seed to replay.
set -euo pipefail

iterations="${1:-200}"
rounds="${2:-1}"
configuration="${CONFIGURATION:-Debug}"
root="$(cd "$(dirname "$0")/.." && pwd)"

projects=(tests/Patterns.Sqlite.Tests)
if [[ -n "${PATTERNS_POSTGRES:-}" ]]; then
  projects+=(tests/Patterns.Postgres.Tests)
  # Its kill test runs on SQLite and PostgreSQL in one class, so it is soaked when both are there.
  projects+=(tests/Patterns.Orchestration.Tests)
else
  echo "PATTERNS_POSTGRES is not set: PostgreSQL is not soaked." >&2
fi

for project in "${projects[@]}"; do
  dotnet build "$root/$project" -c "$configuration" --nologo -v quiet
done

export PATTERNS_KILL_ITERATIONS="$iterations"
for ((round = 1; round <= rounds; round++)); do
  for project in "${projects[@]}"; do
    name="$(basename "$project")"
    echo "== round $round/$rounds: $name, $iterations iterations per case"
    started=$SECONDS
    "$root/$project/bin/$configuration/net10.0/$name" -class "*ProcessKillTests" -stopOnFail -failSkips
    echo "== $name passed in $((SECONDS - started)) s"
  done
done
