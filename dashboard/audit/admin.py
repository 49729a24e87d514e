from django.contrib import admin

from .models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only, even for superusers: the trail is written by the product, never edited."""

    list_display = ("ts", "actor", "address", "action", "target")
    list_filter = ("action",)
    search_fields = ("actor", "target", "address")
    date_hierarchy = "ts"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
