"""Judges: a second model reads a finished run's answers (answer extraction, the clinical report score), and
audits of judges (agreement between two, accuracy on a hand-made gold set)."""
