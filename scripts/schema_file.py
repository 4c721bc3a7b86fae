"""The compact schema file the broker reads (src/providers/schema.rs), made
from a GraphQL introspection result; shared by railway-schema.py and
github-schema.py."""

import json


def named(type_ref):
    while type_ref.get("ofType"):
        type_ref = type_ref["ofType"]
    return type_ref["name"]


def write(schema, source, out, omit=None):
    """Writes what each field of each object and interface type returns and
    the members of each union, leaving out `omit` (type → field names)."""
    omit = omit or {}
    types, unions = {}, {}
    for t in schema["types"]:
        if t["name"].startswith("__"):
            continue
        if t["kind"] in ("OBJECT", "INTERFACE"):
            left_out = omit.get(t["name"], set())
            types[t["name"]] = {f["name"]: named(f["type"]) for f in t["fields"] if f["name"] not in left_out}
        elif t["kind"] == "UNION":
            unions[t["name"]] = sorted(p["name"] for p in t["possibleTypes"])
    head = {
        "source": source,
        "query": schema["queryType"]["name"],
        "mutation": schema["mutationType"]["name"],
        "unions": unions,
    }
    # One type a line, so that a newer schema's diff reads type by type.
    compact = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"))
    lines = [f"  {compact(k)}:{compact(v)}" for k, v in sorted(types.items())]
    out.write_text(compact(head)[:-1] + ',"types":{\n' + ",\n".join(lines) + "\n}}\n")
    return len(types), len(unions)
