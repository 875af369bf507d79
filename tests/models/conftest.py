"""The GPT-2 teacher of the distillation tests (a Llama student learns from it here too)."""

from tests.distill.conftest import teacher_run  # noqa: F401
