"""The case browser (``u2eval view``): every case of a run on a page, with its image, the prompt as sent, the answer
and how each scoring mode judged it. Imports every stage below it; nothing imports it but the CLI."""
