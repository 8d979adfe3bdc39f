"""URLs of the orders API."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.place_order, name="place-order"),
    path("<uuid:run_id>", views.order_status, name="order-status"),
    path("<uuid:run_id>/approve", views.decide, {"decision": "approved"}, name="approve-order"),
    path("<uuid:run_id>/reject", views.decide, {"decision": "rejected"}, name="reject-order"),
    path("<uuid:run_id>/cancel", views.cancel, name="cancel-order"),
]
