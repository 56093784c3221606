"""From answers to scores: strict parsing, the official pipeline bug for bug, judging, metrics, the
aggregation into task scores and the U2-Score, and the summary. Imports data/, benchmark/ and the ground."""
