"""Writes the JSON schemas of the prometheus-operator custom resources the
manifests use, from the models of the PyPI package
cloudcoil.models.prometheus_operator (Apache-2.0), which are generated from
the prometheus-operator CRDs of the same version.

    python3 -m venv /tmp/crd-venv
    /tmp/crd-venv/bin/pip install 'cloudcoil.models.prometheus_operator==0.80.1.0'
    /tmp/crd-venv/bin/python k8s/schemas/export.py

The files are committed; `cargo xtask ops-check` validates the custom
resources against them (xtask/src/ops/k8s/validate_crds.py).
"""

import json
import os
from importlib.metadata import version

from cloudcoil.models.prometheus_operator import v1

PACKAGE = "cloudcoil.models.prometheus_operator"
KINDS = ["PrometheusRule", "ServiceMonitor"]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for kind in KINDS:
        out = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": kind,
            "source": "%s %s (PyPI, Apache-2.0), models generated from the prometheus-operator CRDs"
            % (PACKAGE, version(PACKAGE)),
            "schema": getattr(v1, kind).model_json_schema(mode="validation"),
        }
        path = os.path.join(here, "monitoring.coreos.com_v1_%s.json" % kind.lower())
        with open(path, "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)
            f.write("\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
