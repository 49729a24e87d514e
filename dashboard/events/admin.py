from django.contrib import admin

from .models import ConnectionEvent, Violation


class ReadOnlyAdmin(admin.ModelAdmin):
    """Events are evidence: viewable in the admin, never edited there."""

    list_select_related = ("node", "container")
    show_full_result_count = False  # no COUNT(*) over millions of rows

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ConnectionEvent)
class ConnectionEventAdmin(ReadOnlyAdmin):
    list_display = ("ts", "node", "container", "comm", "pid", "dest_ip", "dest_port", "result", "verdict", "rule_id")
    list_filter = ("verdict",)


@admin.register(Violation)
class ViolationAdmin(ReadOnlyAdmin):
    list_display = ("ts", "node", "container", "rule_id", "action", "severity", "comm", "dest_ip", "dest_port")
    list_filter = ("action", "severity")
