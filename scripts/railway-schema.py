#!/usr/bin/env python3
"""Regenerates config/providers/railway.schema.json, the part of Railway's
public GraphQL schema the broker reads: what each field of each object and
interface type returns, and the members of each union.

The broker types every field nested under a root field with it, so that it
knows when a read follows a reference out of the environment it is bound to
(`deployment { service { … } }`), and refuses a field the schema does not
have. The source is the introspection result the Railway CLI ships
(src/gql/schema.json), from the `railwayapp` crate at a pinned version
(5.71.0, commit b62467ef1b5303e3e340283ed96425dcf9612993). crates.io is
reached through cargo, so a throwaway project outside the repository fetches it:

    cargo new /tmp/rw && cd /tmp/rw && cargo add railwayapp@=$VERSION && cargo fetch
    python3 scripts/railway-schema.py \
      ~/.cargo/registry/src/*/railwayapp-$VERSION/src/gql/schema.json \
      $(jq -r .git.sha1 ~/.cargo/registry/src/*/railwayapp-$VERSION/.cargo_vcs_info.json)

The CLI's documents (src/gql/{mutations,queries}/strings/) are copied next to
it, verbatim, into tests/fixtures/railway-cli/. tests/config_files.rs lists
every mutation and query root field of the schema that the pack does not
name.

A newer schema's types are outside the pack's `confined` list until someone
reviews them, so they are read only by id and name (the stricter way).
"""

import json
import sys
from pathlib import Path

from schema_file import write

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "config/providers/railway.schema.json"


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: railway-schema.py SCHEMA_JSON COMMIT")
    source, commit = sys.argv[1], sys.argv[2]
    data = json.loads(Path(source).read_text())
    schema = data.get("data", data)["__schema"]
    types, unions = write(schema, f"railwayapp/cli@{commit}:src/gql/schema.json", OUT)
    print(f"{OUT.relative_to(ROOT)}: {types} object and interface types, {unions} unions")


if __name__ == "__main__":
    main()
