#!/usr/bin/env python3
"""Every prefetch written in the source is in the object code, at every place it is written.

GCC 12 at -O2 marked a static helper made of __builtin_prefetch calls alone "looping pure"
(local-pure-const) and its callers' early dead-code elimination (cddce1) deleted the calls it
had not inlined yet: the HNSW search's node_prefetch never ran in an optimized build until a
disassembly showed it (the helpers are always_inline since). This reads the objects' line
tables (objdump -dl --inlines) and requires:

- every source line that calls __builtin_prefetch to be the line of some prefetch
  instruction, in .c files and in the headers they include;
- every call of a prefetch helper (a static inline function whose body calls
  __builtin_prefetch) to be a place such an instruction was inlined from.

  tests/prefetch_kept.py SOURCE_DIR OBJECT...      exit 0 ok, 1 a prefetch is missing,
                                                   77 no line tables (a build without -g)
"""
import os
import re
import subprocess
import sys

DIRS = ("common", "indexer", "store", "twcs", "ingest")
LOC = re.compile(r"^(/\S+):(\d+)(?: \(discriminator \d+\))?$")
INL = re.compile(r"^inlined by (/\S+):(\d+)")
INSN = re.compile(r"^\s+[0-9a-f]+:\t(?:[0-9a-f]{2} )+\s*\t(prefetch\w*)\s")


def code_lines(path):
    """The file's lines with comments and string literals blanked (line numbers kept)."""
    text = open(path, encoding="utf-8").read()
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('"' + " " * (j - i - 1) + '"')
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out).split("\n")


def main():
    root, objs = os.path.realpath(sys.argv[1]), sys.argv[2:]
    if not objs:
        print("prefetch_kept: no object files given", file=sys.stderr)
        return 1
    seen = set()  # (path, line) of a prefetch instruction or of a call it was inlined from
    any_lines = False
    for o in objs:
        dis = subprocess.run(["objdump", "-dl", "--inlines", o], capture_output=True, text=True,
                             check=True).stdout
        block = []
        for ln in dis.splitlines():
            m = LOC.match(ln)
            if m:
                any_lines = True
                block = [(os.path.realpath(m.group(1)), int(m.group(2)))]
                continue
            m = INL.match(ln)
            if m:
                block.append((os.path.realpath(m.group(1)), int(m.group(2))))
                continue
            if INSN.match(ln):
                seen.update(block)
    if not any_lines:
        print("prefetch_kept: the objects carry no line tables (build with -g); skipped")
        return 77
    sources = []
    for d in DIRS:
        for dp, _, files in os.walk(os.path.join(root, d)):
            sources += [os.path.join(dp, f) for f in files if f.endswith((".c", ".h"))]
    lines = {s: code_lines(s) for s in sources}
    # Prefetch helpers: static inline functions whose body calls __builtin_prefetch (the
    # kind GCC deleted; a definition starts in column 0 and ends at the next "}" there).
    helpers = set()
    for s, ls in lines.items():
        name = None
        for ln in ls:
            m = re.match(r"^static\s+inline\s+(?:__attribute__\(\(.*?\)\)\s+)?"
                         r"\w[\w\s\*]*?\b(\w+)\(", ln)
            if m:
                name = m.group(1)
            elif re.match(r"^\w", ln):
                name = None  # another definition or declaration
            if ln.startswith("}"):
                name = None
            if name and "__builtin_prefetch(" in ln:
                helpers.add(name)
    missing, wanted = [], 0
    for s, ls in lines.items():
        for i, ln in enumerate(ls, 1):
            if "__builtin_prefetch(" in ln:
                wanted += 1
                if (s, i) not in seen:
                    missing.append(f"{os.path.relpath(s, root)}:{i}: __builtin_prefetch")
                continue
            for h in helpers:
                if re.search(r"\b%s\(" % re.escape(h), ln) and not ln.startswith(("static", h)):
                    # a call (clang-format may wrap it: any of its first three lines counts)
                    wanted += 1
                    if not any((s, j) in seen for j in range(i, i + 3)):
                        missing.append(f"{os.path.relpath(s, root)}:{i}: {h}()")
    for m in missing:
        print(f"prefetch_kept: no prefetch instruction from {m}", file=sys.stderr)
    print(f"prefetch_kept: {wanted - len(missing)} of {wanted} prefetch sites in the object code "
          f"(helpers: {', '.join(sorted(helpers))})")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
