#!/bin/sh
# The seeds' repo-info flow, offline: look the repository up in a bundled file
# instead of GitHub's API. Parameters arrive as JSON in HOST_PARAMETERS.
set -eu
repo=$(echo "$HOST_PARAMETERS" | sed -n 's/.*"repo":"\([^"]*\)".*/\1/p')
line=$(grep "^$repo " /flow/repos.txt || true)
if [ -z "$line" ]; then
    echo "repository $repo is not in the bundled data" >&2
    exit 2
fi
echo "Repository: $repo"
echo "Stars: $(echo "$line" | cut -d' ' -f2)"
echo "Forks: $(echo "$line" | cut -d' ' -f3)"
echo "Flow run: $HOST_FLOW_RUN_NAME"
