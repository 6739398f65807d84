#!/usr/bin/env python3
"""Builds a large GH Archive-like NDJSON file for the import benchmark from the real 2015 hours.

Each copy of the source lines gets its event ids and push ids moved by `copy * OFFSET`, so every
event id and every push id in the output is unique; everything else is the source line byte for
byte. Lines are split on b"\\n" only (GH Archive text may hold other line separators).

    bench/gen_import.py --out target/bench/import.ndjson --min-events 200000
    bench/gen_import.py --out target/bench/archive/2015-01-01-15.json.gz --gzip \
        --min-events 200000 --min-bytes 500000000

Copies are written until both --min-events and --min-bytes (of NDJSON) are reached. With --gzip
OUT is one gzip stream, as GH Archive serves an hour. Writes OUT and OUT.manifest.json
({events, push_events, copies, bytes (NDJSON), file_bytes, sources}). Standard library only.
"""

import argparse
import gzip
import json
import os
import re
import sys
from pathlib import Path

# Larger than any 2015 event id (~2.5e9) or push id (~5.4e8): copies never collide.
OFFSET = 10**10
REPO = Path(__file__).resolve().parent.parent


def default_sources():
    data = Path(os.environ.get("GHEVENTS_DATA_DIR") or REPO.parent / "shared" / "data")
    return [data / "gharchive" / f"2015-01-01-{h}.json.gz" for h in (0, 1)]


def templates(paths):
    """Splits every source line into (text, id, text, push_id or None, text)."""
    out = []
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            event = json.loads(line)
            event_id = event["id"]
            head = b'{"id":"' + event_id.encode() + b'"'
            if not line.startswith(head):
                sys.exit(f"{path}: a line does not start with its id ({event_id}); cannot remap it")
            rest = line[len(head):]
            push_id = (event.get("payload") or {}).get("push_id") if event.get("type") == "PushEvent" else None
            if isinstance(push_id, int):
                pattern = re.compile(rb'"push_id":' + str(push_id).encode() + rb"(?=[,}])")
                found = list(pattern.finditer(rest))
                if len(found) != 1:
                    sys.exit(f"{path}: event {event_id}: push_id {push_id} found {len(found)} times")
                m = found[0]
                out.append((b'{"id":"', int(event_id), b'"' + rest[: m.start()] + b'"push_id":', push_id, rest[m.end():]))
            else:
                out.append((b'{"id":"', int(event_id), b'"' + rest, None, b""))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--min-events", type=int, default=200_000)
    ap.add_argument("--min-bytes", type=int, default=0, help="NDJSON bytes to reach at least")
    ap.add_argument("--gzip", action="store_true", help="write OUT gzip-compressed (level 6, as gzip's default)")
    ap.add_argument("--source", type=Path, action="append", help="GH Archive file (default: both 2015-01-01 hours)")
    args = ap.parse_args()
    sources = args.source or default_sources()
    for s in sources:
        if not s.is_file():
            sys.exit(f"source not found: {s} (set GHEVENTS_DATA_DIR to the directory holding gharchive/)")

    lines = templates(sources)
    ids = [t[1] for t in lines]
    pushes = [t[3] for t in lines if t[3] is not None]
    if len(set(ids)) != len(ids) or len(set(pushes)) != len(pushes):
        sys.exit("the sources repeat an event id or a push id: copies would not be unique")
    if max(ids) >= OFFSET or (pushes and max(pushes) >= OFFSET):
        sys.exit("an id is larger than the copy offset")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    copies = written = 0
    with open(tmp, "wb", buffering=1 << 20) as raw:
        f = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) if args.gzip else raw
        while copies * len(lines) < args.min_events or written < args.min_bytes:
            shift = copies * OFFSET
            chunk = []
            for a, event_id, b, push_id, c in lines:
                chunk.append(a + str(event_id + shift).encode() + b)
                if push_id is not None:
                    chunk.append(str(push_id + shift).encode())
                chunk.append(c + b"\n")
            data = b"".join(chunk)
            f.write(data)
            written += len(data)
            copies += 1
        if args.gzip:
            f.close()
    tmp.replace(args.out)
    manifest = {
        "events": copies * len(lines),
        "push_events": copies * len(pushes),
        "copies": copies,
        "bytes": written,
        "file_bytes": args.out.stat().st_size,
        "gzip": args.gzip,
        "sources": [str(s) for s in sources],
    }
    Path(str(args.out) + ".manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
