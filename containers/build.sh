#!/usr/bin/env bash
# Build containers/NAME.sif from NAME.def on the base image pinned in images.lock, and
# record the image's sha256 next to it (NAME.sif.sha256): benchflow reads it into
# every trial's lineage (benchflow.container_digest). A login-node step:
#   make containers            # every image
#   containers/build.sh vllm   # one
# Needs Apptainer (or Singularity: APPTAINER=singularity).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
APPTAINER=${APPTAINER:-apptainer}
command -v "$APPTAINER" >/dev/null || { echo "$APPTAINER not found: install Apptainer" >&2; exit 2; }
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  mapfile -t names < <(grep -v '^\s*#' "$here/images.lock" | awk 'NF {print $1}')
fi
for name in "${names[@]}"; do
  ref=$(grep -v '^\s*#' "$here/images.lock" | awk -v n="$name" '$1 == n {print $2}')
  [ -n "$ref" ] || { echo "no image named $name in images.lock" >&2; exit 2; }
  case "$ref" in *@sha256:*) ;; *) echo "$name: $ref is not pinned by digest" >&2; exit 2 ;; esac
  # Apptainer's docker bootstrap wants repo@digest (no tag).
  base="$(echo "$ref" | sed -E 's/:[^:@/]+@/@/')"
  echo "building $name.sif from $base"
  "$APPTAINER" build --force --build-arg "base=$base" "$here/$name.sif" "$here/$name.def"
  echo "sha256:$(sha256sum "$here/$name.sif" | cut -d' ' -f1)" > "$here/$name.sif.sha256"
done
