#!/usr/bin/env python3
"""Prints the longest functions and the largest files of a Rust source tree.

Usage: scripts/code-size.py [--top N] [--include-tests] [DIR ...]   (default DIR: shared/src)

A function's length is the number of lines from its `fn` line to the line of its closing
brace, found by matching braces with comments, strings, raw strings and char literals
skipped. Test code is left out unless --include-tests: `#[cfg(test)]` items (the `mod tests`
blocks) and files under a `tests/` directory. A file's size is its line count, test code
included (it is what a reader scrolls through).
"""

import argparse
import os
import re
import sys

FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def mask(src):
    """The source with comments, string and char literal contents replaced by spaces
    (newlines kept), so braces and keywords in them are not seen."""
    out = list(src)
    i, n = 0, len(src)

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif (m := re.match(r'b?r(#*)"', src[i : i + 260])) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            end = '"' + m.group(1)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            blank(i, j)
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}', '{') but not a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", src[i : i + 12])
            if m:
                blank(i, i + m.end())
                i += m.end()
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def matching_brace(text, open_at):
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(text) - 1


def test_spans(text):
    """Character spans of `#[cfg(test)]` items."""
    spans = []
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        brace = text.find("{", m.end())
        semi = text.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            continue
        spans.append((m.start(), matching_brace(text, brace)))
    return spans


def functions(path, include_tests):
    with open(path, encoding="utf-8") as f:
        src = f.read()
    text = mask(src)
    skip = [] if include_tests else test_spans(text)
    line_of = lambda pos: text.count("\n", 0, pos) + 1
    for m in FN.finditer(text):
        if any(a <= m.start() <= b for a, b in skip):
            continue
        # The body starts at the first `{` after the signature; a `;` first means no body.
        depth, k = 0, m.end()
        while k < len(text):
            ch = text[k]
            if ch in "(<[":
                depth += 1
            elif ch in ")>]":
                depth = max(0, depth - 1) if ch != ">" or text[k - 1] != "-" else depth
            elif ch == ";" and depth == 0:
                k = -1
                break
            elif ch == "{" and depth == 0:
                break
            k += 1
        if k < 0 or k >= len(text):
            continue
        end = matching_brace(text, k)
        yield line_of(end) - line_of(m.start()) + 1, m.group(1), line_of(m.start())


def rust_files(roots, include_tests):
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "target" and (include_tests or d != "tests"))
            for name in sorted(filenames):
                if name.endswith(".rs"):
                    yield os.path.join(dirpath, name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="*", default=["shared/src"])
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--include-tests", action="store_true")
    args = ap.parse_args()
    fns, files = [], []
    for path in rust_files(args.dirs, args.include_tests):
        with open(path, encoding="utf-8") as f:
            files.append((sum(1 for _ in f), path))
        fns.extend((n, name, path, line) for n, name, line in functions(path, args.include_tests))
    if not files:
        sys.exit(f"no .rs files under {' '.join(args.dirs)}")
    scope = "test code included" if args.include_tests else "test code excluded"
    print(f"longest functions ({scope}):")
    for n, name, path, line in sorted(fns, key=lambda t: (-t[0], t[2], t[3]))[: args.top]:
        print(f"  {n:5} lines  {name}  {path}:{line}")
    print("largest files:")
    for n, path in sorted(files, key=lambda t: (-t[0], t[1]))[: args.top]:
        print(f"  {n:5} lines  {path}")
    total = sum(n for n, _ in files)
    print(f"{len(files)} files, {total} lines, {len(fns)} functions")


if __name__ == "__main__":
    main()
