"""What is made from finished runs: leaderboards, uncertainty, slices, paired comparisons and ablations,
plots. Imports run/ and everything below it."""
