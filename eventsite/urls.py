"""The site's URLs: each path names a view of monitor.views (the HTTP layer).

Uploaded photos are served from here only while ``SERVE_FILES`` is on (the
embedded default); a deployment's reverse proxy serves them otherwise.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path

from monitor import views
from monitor.views import api
from monitor.views.login import RateLimitedLoginView

from .media import serve_media

urlpatterns = [
    path("", views.feed, name="feed"),
    path("posts/new/", views.post_new, name="post_new"),
    path("posts/<int:post_id>/", views.post_detail, name="post_detail"),
    path("posts/<int:post_id>/like/", views.post_like, name="post_like"),
    path("posts/<int:post_id>/unlike/", views.post_unlike, name="post_unlike"),
    path("posts/<int:post_id>/comments/", views.post_comment, name="post_comment"),
    path("posts/<int:post_id>/delete/", views.post_remove, name="post_delete"),
    path("comments/<int:comment_id>/delete/", views.comment_remove, name="comment_delete"),
    path("users/<str:username>/", views.profile, name="profile"),
    path("users/<str:username>/follow/", views.user_follow, name="user_follow"),
    path("users/<str:username>/unfollow/", views.user_unfollow, name="user_unfollow"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/state.json", views.dashboard_state, name="dashboard_state"),
    path("dashboard/rates.json", views.dashboard_rates, name="dashboard_rates"),
    path("healthz", views.healthz, name="healthz"),
    path("notices/", views.notices, name="notices"),
    path("notices/read/", views.notices_read, name="notices_read"),
    path("settings/tokens/", views.tokens, name="tokens"),
    path(
        "settings/tokens/<int:token_id>/revoke/",
        views.token_revoke_view,
        name="token_revoke",
    ),
    path("api/posts/", api.posts, name="api_posts"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/login/", RateLimitedLoginView.as_view()),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]

if settings.SERVE_FILES:
    urlpatterns.append(re_path(r"^media/(?P<path>.*)$", serve_media, name="media"))
