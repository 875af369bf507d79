"""Knowledge distillation of causal LMs: a student learns from a frozen teacher's predictions.

``run_distill`` (stage.py) reuses the training loop with another loss (losses.py); the student
starts from chosen teacher blocks or at random (student.py); the teacher is any HF causal LM with
the student's tokenizer (teacher.py).
"""

from glotta.distill.stage import run_distill

__all__ = ["run_distill"]
