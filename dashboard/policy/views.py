from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from .models import PolicyState, Rule


@login_required
def rules(request):
    return render(request, "policy/rules.html", {"rules": Rule.objects.all(), "version": PolicyState.current()})
