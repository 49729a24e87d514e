from django.contrib import admin, messages

from .dispatcher import send_test
from .models import Notification, Output, OutputStatus


class StatusInline(admin.StackedInline):
    model = OutputStatus
    can_delete = False
    readonly_fields = [f.name for f in OutputStatus._meta.fields if f.name != "output"]
    verbose_name_plural = "delivery status (kept by the dispatcher)"

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Output)
class OutputAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "enabled", "min_severity", "rules", "dedupe_seconds", "sent", "last_error")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "rules", "tags")
    inlines = (StatusInline,)
    actions = ("test_alert",)
    fieldsets = (
        (None, {"fields": ("name", "kind", "target", "enabled")}),
        ("Route: what goes there (every field set must match)",
         {"fields": ("min_severity", "actions", "rules", "tags", "nodes", "containers")}),
        ("Delivery", {"fields": ("dedupe_seconds", "timeout_seconds")}),
    )  # fmt: skip

    @admin.display(description="sent")
    def sent(self, obj):
        return getattr(getattr(obj, "status", None), "sent", 0)

    @admin.display(description="last error")
    def last_error(self, obj):
        status = getattr(obj, "status", None)
        return status.last_error if status and status.failing_since else ""

    def has_change_permission(self, request, obj=None):
        """Outputs from CROSSEDGE_ALERTS are changed in that file (the dispatcher rewrites them)."""
        return super().has_change_permission(request, obj) and not (obj and obj.from_env)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and not (obj and obj.from_env)

    @admin.action(description="Send a test alert now", permissions=["change"])
    def test_alert(self, request, queryset):
        for output in queryset:
            sent = send_test(output, request.user.get_username())
            if sent.state == "sent":
                messages.success(request, f"{output.name}: test alert delivered")
            else:
                messages.error(request, f"{output.name}: test alert failed: {sent.last_error}")


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("id", "output", "key", "count", "state", "attempts", "created_at", "sent_at", "last_error")
    list_filter = ("state", "output", "test")
    search_fields = ("key",)
    readonly_fields = [f.name for f in Notification._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
