from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from .models import Container, Node


@login_required
def nodes(request):
    return render(request, "fleet/nodes.html", {"nodes": Node.objects.all()})


@login_required
def containers(request):
    return render(request, "fleet/containers.html", {"containers": Container.objects.select_related("node")[:500]})
