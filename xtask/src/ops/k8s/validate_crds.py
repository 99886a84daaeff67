"""Validates custom resources against the vendored schemas.

Usage: python validate_crds.py SCHEMA_DIR RESOURCES.yaml

Every *.json under SCHEMA_DIR holds the schema of one kind:
{"apiVersion": ..., "kind": ..., "source": ..., "schema": <JSON schema>}
(k8s/schemas/export.py writes them). Each object in RESOURCES.yaml is
validated against the schema of its apiVersion and kind; an object without
a schema fails. The schemas are made strict first: an object schema that
lists its properties and does not set additionalProperties rejects other
properties, as `kubectl apply --validate=strict` does.
"""

import glob
import json
import os
import sys

import jsonschema
import yaml


def strict(schema):
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        # Literal values, not schemas.
        out[key] = value if key in ("enum", "const", "default", "examples") else strict(value)
    if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def load_schemas(schema_dir):
    schemas = {}
    for path in sorted(glob.glob(os.path.join(schema_dir, "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        schemas[(doc["apiVersion"], doc["kind"])] = (strict(doc["schema"]), path)
    return schemas


def main(schema_dir, resources):
    schemas = load_schemas(schema_dir)
    failed = 0
    with open(resources) as f:
        docs = [doc for doc in yaml.safe_load_all(f) if doc]
    for doc in docs:
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        name = "%s/%s" % (kind, (doc.get("metadata") or {}).get("name"))
        found = schemas.get((api_version, kind))
        if found is None:
            print("ERROR %s: no vendored schema for %s %s" % (name, api_version, kind), file=sys.stderr)
            failed += 1
            continue
        schema, source = found
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        for error in errors:
            path = ".".join(str(p) for p in error.absolute_path) or "(root)"
            print("ERROR %s: %s: %s" % (name, path, error.message), file=sys.stderr)
        if errors:
            failed += 1
        else:
            print("ops-check: k8s: %s valid against %s" % (name, os.path.relpath(source, schema_dir)))
    if failed:
        print("%d of %d custom resources failed validation" % (failed, len(docs)), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
