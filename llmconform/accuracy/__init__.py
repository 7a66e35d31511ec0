"""Accuracy on tasks with known answers: the task format, scorers and gate (`gate`), and the oracle models trained on
the CPU whose right answers are known exactly (`oracle`)."""
