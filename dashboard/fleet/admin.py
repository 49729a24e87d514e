from django.contrib import admin, messages

from .models import Container, Node
from .signals import cut_off


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "hostname", "kernel", "policy_version", "last_seq", "last_seen_at", "revoked")
    list_filter = ("revoked",)
    search_fields = ("name", "hostname")
    readonly_fields = (
        "created_at",
        "last_seen_at",
        "hostname",
        "kernel",
        "agent_version",
        "health",
        "last_seq",
        "policy_version",
        "policy_error",
        "rejected_messages",
        "last_rejection",
    )
    actions = ("rotate_token", "revoke")

    @admin.display(description="status")
    def status(self, obj):
        return obj.status()

    def save_model(self, request, obj, form, change):
        token = None if obj.token_hash else obj.issue_token()
        super().save_model(request, obj, form, change)
        if token:
            self._show_token(request, obj, token)

    @admin.action(description="Issue a new token (the old one stops working)")
    def rotate_token(self, request, queryset):
        for node in queryset:
            token = node.issue_token()
            node.save(update_fields=["token_hash"])
            cut_off(node.pk)  # its agent reconnects only with the new token
            self._show_token(request, node, token)

    @admin.action(description="Revoke: disconnect now and refuse from now on")
    def revoke(self, request, queryset):
        for node in queryset:
            node.revoked = True
            node.save(update_fields=["revoked"])  # the post_save signal cuts it off
        messages.success(request, f"Revoked {queryset.count()} node(s).")

    def _show_token(self, request, node, token):
        messages.warning(
            request,
            f"Token for node {node.name} (shown once, store it now): {token}  —  "
            f"run: python manage.py runagent --server ws://<dashboard>:8000 --token {token}",
        )


@admin.register(Container)
class ContainerAdmin(admin.ModelAdmin):
    list_display = ("name", "node", "runtime", "container_id", "cgroup_path", "last_seen_at")
    list_filter = ("runtime", "node")
    search_fields = ("name", "container_id", "cgroup_path")
    readonly_fields = [f.name for f in Container._meta.fields]
