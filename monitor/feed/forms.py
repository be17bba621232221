"""What users touch, the forms: signing up, posting a photo, commenting.

Forms check input only; the services in :mod:`monitor.feed.services` make
the change and emit its event. ``PostForm`` hands on the photo already
checked and re-encoded (:mod:`monitor.feed.images`).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.validators import UnicodeUsernameValidator

from monitor.feed import images


class SignupForm(forms.Form):
    username = forms.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
    password = forms.CharField(widget=forms.PasswordInput, strip=False)

    def clean_username(self) -> str:
        username: str = self.cleaned_data["username"]
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
    # A plain file field: images.process_photo decides what is an image, by decoding it.
    photo = forms.FileField(
        widget=forms.ClearableFileInput(attrs={"accept": "image/jpeg,image/png,image/webp"}),
        error_messages={
            "required": "Choose a photo to post.",
            "empty": "The file is empty: choose a photo to post.",
        },
    )
    caption = forms.CharField(
        max_length=2200,
        error_messages={"required": "Write a caption."},
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    def clean_photo(self) -> images.ProcessedPhoto:
        """The upload checked and re-encoded, ready for ``post_create``."""
        try:
            return images.process_upload(self.cleaned_data["photo"])
        except images.PhotoRejected as exc:
            raise forms.ValidationError(exc.message, code="photo") from None


class CommentForm(forms.Form):
    text = forms.CharField(
        max_length=1000,
        error_messages={
            "required": "Write a comment.",
            "max_length": "A comment is at most 1,000 characters (this one has %(show_value)d).",
        },
    )
