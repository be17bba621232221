# syntax=docker/dockerfile:1
# Two images from one build (docker-compose.yml):
#   target "app":   the Django project, for the web processes, the workers and the relay;
#   target "proxy": nginx with deploy/nginx.conf and the static files collected in "app".

FROM python:3.12.11-slim-bookworm AS app

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_STATIC_ROOT=/app/var/static \
    DJANGO_MEDIA_ROOT=/app/var/media

WORKDIR /app

RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin eventsite

# Runtime dependencies only (not requirements-dev.txt), in their own layer.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .

# Static files go into the image (the proxy stage copies them); the media
# directory becomes the shared volume, writable by the site's user.
RUN python manage.py collectstatic --noinput \
    && mkdir -p /app/var/media \
    && chown eventsite:eventsite /app/var/media

USER eventsite
EXPOSE 8000
CMD ["python", "manage.py", "runweb", "--host", "0.0.0.0", "--port", "8000"]


FROM nginx:1.28.0-alpine AS proxy

COPY deploy/nginx.conf /etc/nginx/nginx.conf
COPY --from=app /app/var/static /srv/static
