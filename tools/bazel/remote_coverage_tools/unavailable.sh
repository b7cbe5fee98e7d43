#!/bin/sh
echo "bazel coverage is not available: @remote_coverage_tools is an offline stub (tools/bazel/README.md)" >&2
exit 1
