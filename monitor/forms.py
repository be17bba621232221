from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.validators import UnicodeUsernameValidator


class SignupForm(forms.Form):
    username = forms.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    password = forms.CharField(widget=forms.PasswordInput, strip=False)

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("That username is taken.")
        return username

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        password = cleaned.get("password")
        if password:
            user = get_user_model()(username=cleaned.get("username", ""))
            try:
                password_validation.validate_password(password, user)
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


class PostForm(forms.Form):
    photo = forms.ImageField(
        error_messages={
            "required": "Choose a photo to post.",
            "invalid_image": "The file is not an image we can read (JPEG, PNG, WebP or GIF).",
        }
    )
    caption = forms.CharField(
        max_length=2200,
        error_messages={"required": "Write a caption."},
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def clean_photo(self):  # type: ignore[no-untyped-def]
        photo = self.cleaned_data["photo"]
        if photo.size > settings.MAX_PHOTO_BYTES:
            limit = settings.MAX_PHOTO_BYTES // (1024 * 1024)
            raise forms.ValidationError(f"The photo is larger than {limit} MB.")
        return photo
