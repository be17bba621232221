"""The Content-Security-Policy header on every response.

Django 5.2 has no CSP support and Django 6.0's middleware reads other
settings; this one behaves the same on both: it adds the policy of
``settings.CONTENT_SECURITY_POLICY`` to any response that has none, so a
view (such as the media view, with its stricter policy) or Django 6's own
decorators may set their own.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

CSP_HEADER = "Content-Security-Policy"


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Adds the site's Content-Security-Policy to responses that have none.

    Placed right after ``SecurityMiddleware``, it sees every response,
    including the error pages Django makes from exceptions.
    """

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        policy: str = settings.CONTENT_SECURITY_POLICY
        if policy and CSP_HEADER not in response:
            response.headers[CSP_HEADER] = policy
        return response
