#!/usr/bin/env bash
# Every __builtin_prefetch in the source is still in the object code. GCC 12 at -O2 found a
# helper made of prefetches alone free of side effects and deleted the calls it had not inlined
# yet: the HNSW search's node_prefetch never ran until that was seen in a disassembly (the
# helpers are always_inline since). For each object given, the prefetch instructions in its
# disassembly must be at least the __builtin_prefetch calls written in its source (inlining and
# unrolling only add to them).
#   tests/prefetch_kept.sh SOURCE_DIR OBJECT...
set -euo pipefail
src="$1"
shift
command -v objdump > /dev/null || { echo "prefetch_kept: objdump (binutils) is missing" >&2; exit 1; }
checked=0 failed=0
for o in "$@"; do
  base="$(basename "$o")"
  base="${base%.o}"            # idx_hnsw.c
  base="${base%.obj}"
  s="$(find "$src/common" "$src/indexer" "$src/store" "$src/twcs" "$src/ingest" -name "$base" -print -quit)"
  [[ -n $s ]] || continue
  want="$({ grep -o '__builtin_prefetch(' "$s" || true; } | wc -l)"
  [[ $want -gt 0 ]] || continue
  have="$(objdump -d "$o" | { grep -Ec '\sprefetch(t0|t1|t2|nta|w)?\s' || true; })"
  checked=$((checked + 1))
  if [[ $have -lt $want ]]; then
    echo "prefetch_kept: $s writes $want prefetches, $o holds $have: the compiler dropped some" >&2
    failed=1
  else
    echo "prefetch_kept: $s: $want written, $have in the object code"
  fi
done
[[ $checked -gt 0 ]] || { echo "prefetch_kept: no object file with prefetches was given" >&2; exit 1; }
exit "$failed"
