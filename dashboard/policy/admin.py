"""Rules in the admin, with YAML import and export pages."""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import path

from monitor import rules as engine

from . import actions, checks, policyfile
from .models import Rule


class ImportForm(forms.Form):
    file = forms.FileField(help_text="A policy file in the seed format (rules: with id, match, action).")
    mode = forms.ChoiceField(
        choices=[("merge", "merge: keep rules the file does not name"), ("replace", "replace: delete them")]
    )


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin):
    list_display = (
        "rule_id",
        "priority",
        "action",
        "mode",
        "severity",
        "container",
        "dest_ip",
        "dest_fqdn",
        "dest_port",
        "binary",
        "description",
    )
    list_editable = ("priority", "action", "mode")
    list_filter = ("action", "mode", "severity")
    search_fields = ("rule_id", "description", "container", "dest_ip", "dest_fqdn", "binary", "parent", "path")
    change_list_template = "admin/policy/rule/change_list.html"
    fieldsets = (
        (None, {"fields": ("rule_id", "description", "action", "mode", "severity", "priority", "tags")}),
        ("Which containers (empty fields match every one)", {"fields": ("container", "cgroup_path", "cgroup_id")}),
        (
            "Connections: a destination by address or by name (empty fields match any)",
            {"fields": ("dest_ip", "dest_fqdn", "dest_port")},
        ),
        (
            "Or processes: a binary run in the container (a rule judges connections, execs or opens)",
            {"fields": ("binary", "parent", "fileless", "sha256")},
        ),
        (
            "Or files: a path opened in the container (binary and parent then name the opener)",
            {"fields": ("path", "access")},
        ),
        (
            "Or sockets: raw, packet, ICMP or SCTP sockets a container makes, or a unix socket it connects to by "
            "path (nothing else named but containers)",
            {"fields": ("socket", "unix_path")},
        ),
        (
            "Or ingress: packets from a source network, dropped at XDP on the nodes' chosen interfaces",
            {"fields": ("source_ip", "expires")},
        ),
        (
            "Or limits, judged in the kernel: a container reaching many new destinations (a scan), a source "
            "sending many TCP SYNs (a flood; nothing else named), or what a container may send (one rate a rule)",
            {"fields": ("new_destinations", "syn_per_source", "hold", "egress_bytes_per_s", "connections_per_s")},
        ),
    )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        rules = [engine.parse_rule(r.to_spec(), order=i) for i, r in enumerate(Rule.objects.all())]
        for warning in checks.warnings(rules, about=obj.rule_id):
            messages.warning(request, warning)

    def get_urls(self):
        extra = [
            path("import/", self.admin_site.admin_view(self.import_view), name="policy_rule_import"),
            path("export/", self.admin_site.admin_view(self.export_view), name="policy_rule_export"),
        ]
        return extra + super().get_urls()

    def import_view(self, request):
        if not self.has_change_permission(request) or not self.has_add_permission(request):
            return redirect("admin:policy_rule_changelist")
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            limit = settings.POLICY_MAX_BYTES
            if form.cleaned_data["mode"] == "replace" and not self.has_delete_permission(request):
                form.add_error("mode", "Nothing was imported: replace deletes rules, and you may not delete rules.")
                return self._import_page(request, form)
            try:
                rules = policyfile.loads(upload.read(limit + 1), upload.name, limit)
                warnings = policyfile.check(rules, upload.name)
                result = actions.import_rules(rules, form.cleaned_data["mode"], source=upload.name)
            except policyfile.PolicyFileError as exc:
                form.add_error("file", f"Nothing was imported. {exc}")
            else:
                messages.success(request, f"Imported {upload.name}: {result}.")
                for warning in warnings:
                    messages.warning(request, warning)
                return redirect("admin:policy_rule_changelist")
        return self._import_page(request, form)

    def _import_page(self, request, form):
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Import rules from YAML",
            "opts": self.model._meta,
        }
        return render(request, "admin/policy/rule/import.html", context)

    def export_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied("exporting the policy needs permission to view rules")
        response = HttpResponse(actions.export_policy("download"), content_type="application/yaml")
        response["Content-Disposition"] = 'attachment; filename="crossedge-policy.yaml"'
        return response
