#!/usr/bin/env python3
"""Regenerates config/providers/github.schema.json, the part of GitHub's
public GraphQL schema the broker reads: what each field of each object and
interface type returns, and the members of each union.

The broker types every field nested under a root field with it, so that it
knows when a read follows a reference out of the repository it is bound to
(`repository { owner { repositories { … } } }`), and refuses a field the
schema does not have. The source is GitHub's published introspection result,
the npm package @octokit/graphql-schema pinned in tests/js/package.json:

    npm ci --prefix tests/js
    python3 scripts/github-schema.py

Fields that hand out a way around the broker are left out, so that the
broker refuses them as fields it does not know (`OMIT`). A newer schema's
types are outside the pack's `confined` list until someone reviews them, so
they are read only through their identity fields (the stricter way).
"""

import json
import sys
from pathlib import Path

from schema_file import write

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tests/js/node_modules/@octokit/graphql-schema"
OUT = ROOT / "config/providers/github.schema.json"

# Type → fields the broker never lets a read select.
OMIT = {
    # A token that clones the repository without the broker.
    "Repository": {"tempCloneToken"},
}


def main():
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE / "schema.json"
    version = json.loads((PACKAGE / "package.json").read_text())["version"]
    data = json.loads(source.read_text())
    schema = data.get("data", data)["__schema"]
    for ty, fields in OMIT.items():
        have = {f["name"] for t in schema["types"] if t["name"] == ty for f in t["fields"]}
        if fields - have:
            sys.exit(f"OMIT names {ty}.{sorted(fields - have)}, which the schema lacks")
    types, unions = write(schema, f"@octokit/graphql-schema@{version}:schema.json", OUT, OMIT)
    print(f"{OUT.relative_to(ROOT)}: {types} object and interface types, {unions} unions")


if __name__ == "__main__":
    main()
