"""Validates every object of rendered manifests offline against the Kubernetes OpenAPI
schemas shipped by the `kubernetes-validate` package, strictly (unknown fields are errors).

An object whose kind has no schema fails, except the custom resources named in CRD_GROUPS:
the core schemas have no CRDs, so those are skipped here and checked by test_manifests.py.

    validate.py --kubernetes-version 1.37.0 rendered/*.yaml
"""

import argparse
import functools
import sys

import yaml
from kubernetes_validate import utils

# Custom resources of the optional components (deploy/components): Prometheus Operator and KEDA.
CRD_GROUPS = {"monitoring.coreos.com", "keda.sh"}

# The schema files are large and the same for every object: read each one once.
utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)


def name(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.kubernetes_version.rsplit(".", 1)[0] not in {
        v.rsplit(".", 1)[0] for v in utils.all_versions()
    }:
        print(f"schemas: kubernetes-validate ships no schemas for {args.kubernetes_version}")
        return 2

    valid = skipped = 0
    errors = []
    for path in args.files:
        with open(path) as f:
            objects = [o for o in yaml.safe_load_all(f) if o]
        if not objects:
            errors.append(f"{path}: no objects")
        for obj in objects:
            group = obj.get("apiVersion", "").rpartition("/")[0]
            try:
                utils.validate(obj, args.kubernetes_version, strict=True)
                valid += 1
            except utils.SchemaNotFoundError as e:
                if group in CRD_GROUPS:
                    skipped += 1
                else:
                    errors.append(f"{path}: {name(obj)}: {e.message}")
            except utils.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                errors.append(f"{path}: {name(obj)}: {where}: {e.message}")
    for e in errors:
        print(f"ERROR {e}")
    print(
        f"schemas: {valid} objects valid against Kubernetes {args.kubernetes_version} (strict), "
        f"{skipped} custom resources skipped, {len(errors)} errors"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
