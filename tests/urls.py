"""URLs of the test suite: the admin and the example shop's orders API."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("orders/", include("example_project.orders.urls")),
]
