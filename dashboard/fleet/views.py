from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from monitor.features import FEATURES

from .models import Container, Node

TOOLS = ("bpftool", "bpftrace")


def feature_matrix(nodes) -> list[dict]:
    """One row per probed feature or tool, one cell per node (None: not reported)."""
    rows = []
    for tool in TOOLS:
        rows.append({"name": f"{tool} version", "cells": [n.features.get("tools", {}).get(tool) for n in nodes]})
    for name in FEATURES:
        rows.append(
            {"name": name.replace("_", " "), "cells": [n.features.get("features", {}).get(name) for n in nodes]}
        )
    return rows


@login_required
def nodes(request):
    nodes = list(Node.objects.all())
    return render(request, "fleet/nodes.html", {"nodes": nodes, "matrix": feature_matrix(nodes)})


@login_required
def containers(request):
    return render(request, "fleet/containers.html", {"containers": Container.objects.select_related("node")[:500]})
