from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from .dispatcher import send_test
from .models import Notification, Output


@login_required
def outputs(request):
    """Every output, its route, its delivery counters and last error; the latest notifications."""
    rows = Output.objects.select_related("status").annotate(
        queued=Count("notifications", filter=Q(notifications__state="queued"))
    )
    context = {
        "outputs": rows,
        "recent": Notification.objects.select_related("output")[:50],
        "can_test": request.user.has_perm("alerts.change_output"),
    }
    return render(request, "alerts/outputs.html", context)


@require_POST
@login_required
def test(request, pk):
    if not request.user.has_perm("alerts.change_output"):
        raise PermissionDenied("only administrators can send test alerts")
    output = get_object_or_404(Output, pk=pk)
    sent = send_test(output, request.user.get_username())
    if sent.state == "sent":
        messages.success(request, f"{output.name}: test alert delivered.")
    else:
        messages.error(request, f"{output.name}: test alert failed: {sent.last_error}")
    return redirect("alerts")
