from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard.alerts import views as alerts
from dashboard.api import views as api
from dashboard.audit import views as audit
from dashboard.events import search
from dashboard.events import views as events
from dashboard.fleet import metrics as fleet_metrics
from dashboard.fleet import views as fleet
from dashboard.policy import views as policy
from dashboard.traffic import views as traffic

urlpatterns = [
    path("", events.overview, name="overview"),
    path("feed/<str:feed>/", events.feed, name="feed"),
    path("nodes/", fleet.nodes, name="nodes"),
    path("containers/", fleet.containers, name="containers"),
    path("rules/", policy.rules, name="rules"),
    path("rules/<str:rule_id>/", policy.rule, name="rule"),
    path("rules/<str:rule_id>/promote/", policy.promote, name="rule-promote"),
    path("rule-test/", policy.draft, name="rule-draft"),
    path("containers/<int:pk>/", fleet.container, name="container"),
    path("processes/<int:pk>/", events.process, name="process"),
    path("events/", search.search, name="search"),
    path("alerts/", alerts.outputs, name="alerts"),
    path("alerts/<int:pk>/test/", alerts.test, name="alert-test"),
    path("audit/", audit.trail, name="audit"),
    path("traffic/", traffic.page, name="traffic"),
    path("traffic/export.<str:fmt>", traffic.export, name="traffic-export"),
    path("audit/export.<str:fmt>", audit.export, name="audit-export"),
    path("events/export.<str:fmt>", search.export, name="export"),
    path("violations/grouped/", search.grouped, name="grouped"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("api/connections/", api.connections, name="api-connections"),
    path("api/processes/", api.processes, name="api-processes"),
    path("api/violations/", api.violations, name="api-violations"),
    path("api/nodes/", api.nodes, name="api-nodes"),
    path("api/traffic/", traffic.api, name="api-traffic"),
    path("metrics", fleet_metrics.metrics, name="metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
