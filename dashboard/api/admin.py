from django.contrib import admin, messages

from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "created_at", "last_used_at")
    fields = ("user", "name")

    def save_model(self, request, obj, form, change):
        if not change:
            token, key = ApiToken.create_for(obj.user, obj.name)
            obj.pk, obj.key_hash = token.pk, token.key_hash
            messages.warning(request, f"API key for {obj.name} (shown once): {key}")
        else:
            super().save_model(request, obj, form, change)
