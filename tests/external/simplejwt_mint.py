"""Mints tokens with djangorestframework-simplejwt itself, the way a Django
project with simplejwt's defaults does (palaver's tests/it/external.rs runs
it with the .venv Python that scripts/test installs it into).

Reads one JSON object on stdin:
  {"signing_key": "...", "tokens": [{"type": "access"|"refresh",
   "user_id": 42, "lifetime_seconds": 300}, ...]}
and prints a JSON list of the tokens, in order. `lifetime_seconds` may be
negative (an expired token). No database: simplejwt's `for_user` reads only
the user's id.
"""

import json
import sys
import types
from datetime import timedelta

import django
from django.conf import settings

spec = json.load(sys.stdin)
settings.configure(
    SECRET_KEY=spec["signing_key"],
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    # What a project writes in settings.py; every other key is simplejwt's
    # default (HS256, USER_ID_CLAIM "user_id", TOKEN_TYPE_CLAIM "token_type",
    # no ISSUER, no AUDIENCE).
    SIMPLE_JWT={
        "SIGNING_KEY": spec["signing_key"],
        "ALGORITHM": "HS256",
        "USER_ID_FIELD": "id",
        "USER_ID_CLAIM": "user_id",
    },
)
django.setup()

from rest_framework_simplejwt.tokens import AccessToken, RefreshToken  # noqa: E402

out = []
for wanted in spec["tokens"]:
    user = types.SimpleNamespace(id=wanted["user_id"], is_active=True, password="")
    cls = AccessToken if wanted["type"] == "access" else RefreshToken
    token = cls.for_user(user)
    if "lifetime_seconds" in wanted:
        token.set_exp(lifetime=timedelta(seconds=wanted["lifetime_seconds"]))
    out.append(str(token))
print(json.dumps(out))
